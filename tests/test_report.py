"""The loyalty report (pipelines.report, the `reports/loyalty_report` asset and `loyalty report`).

One warehouse is built per module through `loyalty run` on ~3000 generated orders; the charts are checked against
queries of the marts written here independently, not against the report's own queries.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pipelines import cli, report
from pipelines.generate import generate
from pipelines.rules import load_rules
from pipelines.settings import ENV
from tests.helpers import query

AS_OF = date(2026, 10, 31)  # the generator's last day of orders
CHARTS = ["rfm_grid", "segment_sizes", "tier_migration", "points_redemption", "order_value_trend", "lifetime_value"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A warehouse built by `loyalty run` (which also materializes the report asset), and the report of it."""
    home = tmp_path_factory.mktemp("report")
    raw = home / "raw"
    generate(raw, orders=3000, seed=7, end_date=AS_OF)
    warehouse = home / "warehouse" / "loyalty.duckdb"
    with pytest.MonkeyPatch.context() as env:
        for name in ENV.values():
            env.delenv(name, raising=False)
        env.setenv(ENV["reports_dir"], str(home / "reports"))
        code = cli.main(
            [
                "run",
                "--raw-dir",
                str(raw),
                "--warehouse",
                str(warehouse),
                "--exports-dir",
                str(home / "exports"),
                "--as-of",
                AS_OF.isoformat(),
            ]
        )
    assert code == 0, "loyalty run failed: see the summary above"
    result = report.build_report(warehouse, home / "out")
    return home, warehouse, result


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ENV["reports_dir"], str(tmp_path / "reports"))  # never the repository's data/reports


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def embedded_rows(page: str, chart: str) -> list[dict]:
    match = re.search(rf'<script type="application/json" class="chart-data" data-chart="{chart}">(.*?)</script>', page)
    assert match, f"no data block for {chart}"
    return json.loads(match.group(1))


# ---------------------------------------------------------------------------------------------------------------------
# Files


def test_every_chart_has_a_valid_png(built):
    _, _, result = built
    assert [chart.name for chart in result.charts] == CHARTS
    for chart in result.charts:
        assert chart.png.parent == result.out_dir and chart.png.name == f"{chart.name}.png"
        width, height = png_size(chart.png)
        assert width > 400 and height > 200, (chart.name, width, height)
        assert not chart.empty, f"{chart.name} has no data on a 3000-order warehouse"
    assert sorted(p.name for p in result.out_dir.iterdir()) == sorted([f"{c}.png" for c in CHARTS] + ["report.html"])
    assert result.files == [result.html, *(chart.png for chart in result.charts)]


def test_html_works_offline(built):
    _, _, result = built
    page = result.html.read_text()
    # Nothing is fetched: no external src/href, no script or stylesheet loaded from a file or a CDN.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.IGNORECASE)
    assert not re.search(r"<link\b", page, re.IGNORECASE)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", page, re.IGNORECASE)
    # Every chart is an SVG picture inside the page.
    images = re.findall(r'<img src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(CHARTS)
    for image in images:
        assert base64.b64decode(image).decode().startswith("<svg")


def test_html_has_headline_numbers_titles_and_dated_captions(built):
    _, warehouse, result = built
    page = result.html.read_text()
    customers = query(warehouse, "select count(*) from marts.dim_customers")[0][0]
    delivered, revenue = query(warehouse, "select sum(delivered), sum(revenue) from marts.order_value_trend")[0]
    liability = query(
        warehouse, "select sum(liability) from marts.points_redemption where month = ?", [AS_OF.replace(day=1)]
    )[0][0]
    redeemed, earned = query(warehouse, "select sum(redeemed), sum(earned) from marts.points_redemption")[0]
    assert result.headline["customers"] == customers
    assert result.headline["delivered_orders"] == delivered
    assert result.headline["revenue"] == pytest.approx(float(revenue))
    assert result.headline["liability"] == pytest.approx(float(liability))
    assert result.headline["redemption_rate"] == pytest.approx(redeemed / earned)
    for shown in (f"{customers:,}", f"{delivered:,}", f"{float(revenue):,.0f} USD", f"{float(liability):,.0f} USD"):
        assert f'<div class="value">{shown}</div>' in page
    assert f'<div class="value">{redeemed / earned:.1%}</div>' in page
    for chart in result.charts:
        assert f"<h2>{chart.title}</h2>" in page
        assert "31 Oct 2026" in chart.caption, chart.caption
    assert page.count("<figcaption>") == len(CHARTS)


def test_embedded_rows_are_the_chart_data(built):
    _, _, result = built
    page = result.html.read_text()
    for chart in result.charts:
        expected = json.loads(chart.data.write_json())
        assert embedded_rows(page, chart.name) == expected, chart.name


# ---------------------------------------------------------------------------------------------------------------------
# Each chart carries the rows of its mart


def test_rfm_grid_cells_count_the_scored_customers(built):
    _, warehouse, result = built
    grid = result.chart("rfm_grid").data
    assert grid.height == 25
    assert grid["customers"].sum() == query(warehouse, "select count(*) from marts.customer_rfm")[0][0]
    expected = {
        (r, f): (n, float(m))
        for r, f, n, m in query(
            warehouse, "select r_score, f_score, count(*), sum(monetary) from marts.customer_rfm group by 1, 2"
        )
    }
    cells = {(row["r_score"], row["f_score"]): (row["customers"], row["revenue"]) for row in grid.to_dicts()}
    for cell, (customers, revenue) in cells.items():
        want_customers, want_revenue = expected.get(cell, (0, 0.0))
        assert customers == want_customers, cell
        assert revenue == pytest.approx(want_revenue), cell
    champions = grid.filter((pl.col("r_score") == 5) & (pl.col("f_score") == 5))["segment"].item()
    assert champions == "Champions"


def test_segment_sizes_equal_the_segments_of_customer_rfm(built):
    _, warehouse, result = built
    data = result.chart("segment_sizes").data
    expected = dict(query(warehouse, "select segment, count(*) from marts.customer_rfm group by 1"))
    shown = {row["segment"]: row["customers"] for row in data.to_dicts() if row["customers"]}
    assert shown == expected
    assert data.height == 10  # every segment of the map, empty ones too
    assert data["customers"].to_list() == sorted(data["customers"].to_list(), reverse=True)  # largest first
    revenue = dict(query(warehouse, "select segment, sum(monetary) from marts.customer_rfm group by 1"))
    for row in data.to_dicts():
        assert row["revenue"] == pytest.approx(float(revenue.get(row["segment"], 0))), row["segment"]


def test_tier_migration_matrix_sums_the_last_twelve_months(built):
    _, warehouse, result = built
    data = result.chart("tier_migration").data
    rows = query(
        warehouse,
        "select tier_from, tier_to, sum(customers) from marts.tier_migration "
        "where month between date '2025-11-01' and date '2026-10-01' group by 1, 2",
    )
    assert data["customers"].sum() == sum(n for _, _, n in rows)
    cells = {(row["tier_from"], row["tier_to"]): row["customers"] for row in data.to_dicts()}
    assert {cell: n for cell, n in cells.items() if n} == {(a, b): n for a, b, n in rows if n}
    tiers = [tier.name for tier in load_rules().tiers]
    assert len(cells) == len(tiers) ** 2  # the full matrix, zeros included
    # Rows and columns in the rules' order, lowest tier first (not alphabetical: Bronze, Gold, Platinum, Silver).
    assert data.sort("from_rank")["tier_from"].unique(maintain_order=True).to_list() == tiers
    assert data.sort("to_rank")["tier_to"].unique(maintain_order=True).to_list() == tiers
    moves = dict(
        query(
            warehouse,
            "select movement, sum(customers) from marts.tier_migration "
            "where month between date '2025-11-01' and date '2026-10-01' group by 1",
        )
    )
    by_movement = dict(data.group_by("movement").agg(pl.col("customers").sum()).iter_rows())
    assert {k: v for k, v in by_movement.items() if v} == {k: v for k, v in moves.items() if v}


def test_points_chart_has_monthly_rates_and_liability(built):
    _, warehouse, result = built
    data = result.chart("points_redemption").data
    expected = query(
        warehouse,
        "select month, sum(earned), sum(redeemed), sum(expired), sum(liability) from marts.points_redemption "
        "where month between date '2024-11-01' and date '2026-10-01' group by 1 order by 1",
    )
    assert data["month"].to_list() == [row[0] for row in expected]
    for row, (_, earned, redeemed, expired, liability) in zip(data.to_dicts(), expected, strict=True):
        assert row["redemption_rate"] == (pytest.approx(redeemed / earned) if earned else None)
        assert row["breakage"] == (pytest.approx(expired / earned) if earned else None)
        assert row["liability"] == pytest.approx(float(liability))
    assert data["liability"][-1] == pytest.approx(result.headline["liability"])


def test_order_value_trend_has_monthly_revenue_and_aov(built):
    _, warehouse, result = built
    data = result.chart("order_value_trend").data
    expected = query(
        warehouse,
        "select order_month, source, sum(revenue), sum(delivered) from marts.order_value_trend "
        "where order_month >= date '2024-11-01' group by 1, 2",
    )
    shown = {(row["month"], row["source"]): (row["revenue"], row["delivered"]) for row in data.to_dicts()}
    assert shown.keys() == {(m, s) for m, s, _, _ in expected}
    for month, source, revenue, delivered in expected:
        assert shown[(month, source)] == (pytest.approx(float(revenue)), delivered)
    monthly = query(
        warehouse,
        "select order_month, sum(revenue) / sum(delivered) from marts.order_value_trend "
        "where order_month >= date '2024-11-01' group by 1 order by 1",
    )
    aov = dict(data.select("month", "month_aov").unique().iter_rows())
    for month, want in monthly:
        assert aov[month] == pytest.approx(float(want)), month


def test_months_without_orders_keep_their_place_and_old_ones_drop_out(tmp_path):
    """Monthly charts show every month of the last TREND_MONTHS, empty ones too: no gap closes up silently."""
    path = tmp_path / "gaps.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema marts")
        con.execute(
            """create table marts.order_value_trend as
               select * from (values (date '2017-03-01', 'brevo', 1, 1, 0, 50.0),
                                     (date '2026-01-01', 'brevo', 2, 2, 0, 300.0),
                                     (date '2026-03-01', 'bonifiq', 1, 1, 0, 20.0))
                   as t(order_month, source, orders, delivered, cancelled, revenue)"""
        )
    result = report.build_report(path, tmp_path / "out", date(2026, 4, 15))
    data = result.chart("order_value_trend").data
    months = [date(2026, month, 1) for month in (1, 2, 3, 4)]
    assert data["month"].unique().sort().to_list() == months  # 2017 is out of the window; February and April are in
    assert data.filter(pl.col("month") == date(2026, 2, 1))["revenue"].to_list() == [0.0, 0.0]
    assert data.filter(pl.col("month") == date(2026, 2, 1))["month_aov"].to_list() == [None, None]
    assert "April 2026 is partial (to 15 Apr 2026)" in result.chart("order_value_trend").caption
    png_size(result.chart("order_value_trend").png)


def test_lifetime_value_bands_hold_every_predicted_customer(built):
    _, warehouse, result = built
    data = result.chart("lifetime_value").data
    predicted, total = query(
        warehouse, "select count(clv), sum(clv) from marts.customer_lifetime_value where clv is not null"
    )[0]
    assert data["customers"].sum() == predicted
    assert data["clv_total"].sum() == pytest.approx(total)
    p99 = query(warehouse, "select quantile_cont(clv, 0.99) from marts.customer_lifetime_value")[0][0]
    edges = report.clv_band_edges(p99)
    top = query(warehouse, "select count(*) from marts.customer_lifetime_value where clv >= ?", [edges[-1]])[0][0]
    assert data.filter(pl.col("band_index") == len(edges) - 1)["customers"].sum() == top
    by_segment = dict(
        query(
            warehouse,
            "select coalesce(r.segment, 'Not scored'), sum(c.clv) from marts.customer_lifetime_value as c "
            "left join marts.customer_rfm as r using (customer_id) where c.clv is not null group by 1",
        )
    )
    shown = dict(data.group_by("segment").agg(pl.col("clv_total").sum()).iter_rows())
    assert shown.keys() == by_segment.keys()
    for segment, value in by_segment.items():
        assert shown[segment] == pytest.approx(value), segment


def test_clv_band_edges_are_round_and_cover_the_tail():
    edges = report.clv_band_edges(3874.4)
    assert edges == [0.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0]
    assert report.clv_band_labels(edges) == [
        "0–10", "10–25", "25–50", "50–100", "100–250", "250–500", "500–1k", "1k–2.5k", "2.5k–5k", "5k+"
    ]  # fmt: skip
    small = report.clv_band_edges(0.3)
    assert small[0] == 0 and small[-1] >= 0.3 and len(small) == report.CLV_BANDS
    assert all(a < b for a, b in zip(small, small[1:], strict=False))


# ---------------------------------------------------------------------------------------------------------------------
# The asset, the command, the edges


def test_the_run_materialized_the_report_asset(built):
    home, _, _ = built
    folder = home / "reports" / AS_OF.isoformat()
    assert (folder / "report.html").is_file()
    for name in CHARTS:
        png_size(folder / f"{name}.png")


def test_loyalty_report_writes_into_the_reports_dir_under_the_as_of(built, tmp_path, capsys):
    _, warehouse, _ = built
    assert cli.main(["report", "--warehouse", str(warehouse)]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "reports" / AS_OF.isoformat()
    assert f"report       {folder / 'report.html'}" in out
    for name in CHARTS:
        assert str(folder / f"{name}.png") in out
        png_size(folder / f"{name}.png")
    assert "(no data)" not in out


def test_loyalty_report_bad_usage_exits_2(built, tmp_path, capsys):
    _, warehouse, _ = built
    assert cli.main(["report", "--warehouse", str(tmp_path / "missing.duckdb")]) == 2
    err = capsys.readouterr().err
    assert "missing.duckdb does not exist" in err and "loyalty run" in err and "Traceback" not in err
    assert cli.main(["report", "--warehouse", str(warehouse), "--as-of", "2026-11-22", "--out", str(tmp_path)]) == 2
    assert "the marts are as of 2026-10-31, not 2026-11-22" in capsys.readouterr().err
    assert cli.main(["report", "--warehouse", str(warehouse), "--as-of", "31/10/2026"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_an_empty_warehouse_gives_no_data_charts(tmp_path, capsys):
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    assert cli.main(["report", "--warehouse", str(empty), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "holds no marts yet" in captured.err
    assert captured.out.count("(no data)") == len(CHARTS)
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("No data:") == len(CHARTS)
    for name in CHARTS:
        png_size(tmp_path / "out" / f"{name}.png")


def test_marts_without_rows_give_no_data_charts(built, tmp_path):
    _, warehouse, _ = built
    empty = tmp_path / "empty_marts.duckdb"
    with duckdb.connect(str(empty)) as con:
        con.execute(f"attach '{warehouse}' as built (read_only)")
        con.execute("create schema marts")
        tables = con.execute(
            "select table_name from information_schema.tables where table_catalog = 'built' and table_schema = 'marts'"
        ).fetchall()
        for (table,) in tables:
            con.execute(f"create table marts.{table} as select * from built.marts.{table} limit 0")
    result = report.build_report(empty, tmp_path / "out", AS_OF)
    assert all(chart.empty for chart in result.charts)
    assert result.headline["customers"] == 0 and result.headline["redemption_rate"] is None
    assert "31 Oct 2026" in result.html.read_text()
    for chart in result.charts:
        png_size(chart.png)


def test_a_failed_render_leaves_the_previous_report(built, tmp_path, monkeypatch):
    _, warehouse, _ = built
    out = tmp_path / "out"
    first = report.build_report(warehouse, out)
    before = {path.name: path.read_bytes() for path in first.files}

    def broken(*args, **kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(report.vl_convert, "vegalite_to_svg", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        report.build_report(warehouse, out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # untouched, no temporary left behind
