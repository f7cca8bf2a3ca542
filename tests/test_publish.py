"""What a run hands to readers (issue #5): the read-only warehouse copy, Parquet marts, dbt docs, daily exports.

One pipeline run over the seed fixtures (conftest `seed_run`) serves the read-only tests; tests that run again or
break something work on a copy of its output directory.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from pipelines import exports, publish, runs
from pipelines.definitions import defs
from pipelines.defs.publish import PUBLISHED
from pipelines.exports import FORMATS, export_all_segments, export_segments, known_segments, segment_slug


@pytest.fixture
def done(seed_run):
    assert seed_run.exit_code == 0, seed_run.stdout + seed_run.stderr
    return seed_run


def _rows(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def _marts(path: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(path), read_only=True) as con:
        tables = [
            r[0] for r in con.execute("select table_name from duckdb_tables() where schema_name = 'marts'").fetchall()
        ]
        return {t: con.execute(f"select * from marts.{t} order by all").fetchall() for t in sorted(tables)}


def _fingerprint(path: Path) -> tuple:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size, path.read_bytes()


# --- the published warehouse -------------------------------------------------------------------------------------


def test_published_copy_opens_read_only_with_the_working_marts(done):
    published = done.settings.published_warehouse
    assert published == done.settings.warehouse.parent / "published" / "loyalty.duckdb"
    working = _marts(done.settings.warehouse)
    assert set(working) >= {"customer_rfm", "rfm_segment_summary", "fct_orders", "points_redemption"}
    assert _marts(published) == working
    leftovers = [p.name for p in published.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary copy or folder left behind


def test_parquet_files_match_the_marts(done):
    parquet_dir = done.settings.published_parquet_dir
    counts = {t: len(rows) for t, rows in _marts(done.settings.published_warehouse).items()}
    assert sorted(p.stem for p in parquet_dir.glob("*.parquet")) == sorted(counts)
    with duckdb.connect() as con:
        parquet_counts = {
            table: con.execute(
                "select count(*) from read_parquet(?)", [str(parquet_dir / f"{table}.parquet")]
            ).fetchone()[0]
            for table in counts
        }
    assert parquet_counts == counts


def test_column_descriptions_are_comments_in_the_published_warehouse(done):
    published = done.settings.published_warehouse
    missing = _rows(
        published,
        "select table_name, column_name from duckdb_columns() where schema_name = 'marts' and comment is null",
    )
    assert missing == []
    [(comment,)] = _rows(
        published,
        "select comment from duckdb_columns() where schema_name = 'marts' and table_name = 'customer_rfm' "
        "and column_name = 'last_order_date'",
    )
    assert comment == "Date (UTC) of the customer's last delivered order in the window."
    [(table_comment,)] = _rows(
        published, "select comment from duckdb_tables() where schema_name = 'marts' and table_name = 'customer_rfm'"
    )
    assert table_comment.startswith("One row per customer")


def test_dbt_docs_page_is_shipped_self_contained(done):
    page = publish.docs_path(done.settings.warehouse)
    assert page == done.settings.warehouse.parent / "docs" / "index.html"
    html = page.read_text(encoding="utf-8")
    for mart in _marts(done.settings.warehouse):
        assert f"model.loyalty.{mart}" in html, mart
    assert "MANIFEST.JSON INLINE DATA" not in html and "CATALOG.JSON INLINE DATA" not in html
    assert not re.search(r"<script[^>]+src=[\"']?(https?:)?//", html)  # no script from the network
    assert re.search(r'"send_anonymous_usage_stats":\s*false', html)  # the page's tracker stays off


def test_the_published_warehouse_waits_for_every_other_asset():
    graph = defs.resolve_asset_graph()
    others = {key for key in graph.get_all_asset_keys() if graph.get(key).is_executable} - {PUBLISHED}
    assert {"exports/segment_files", "docs/dbt_docs", "marts/customer_rfm"} <= {k.to_user_string() for k in others}
    assert graph.get(PUBLISHED).parent_keys >= others


def test_a_failed_step_leaves_the_published_copy_untouched(done, tmp_path, monkeypatch, capsys):
    run = done.copy(tmp_path / "copy")
    published, parquet = run.settings.published_warehouse, run.settings.published_parquet_dir
    before = _fingerprint(published), sorted((p.name, p.stat().st_mtime_ns) for p in parquet.iterdir())

    def broken(settings, rules):
        raise OSError("disk full")

    monkeypatch.setattr(runs, "compute_points", broken)
    assert run.run(monkeypatch) == 1
    captured = capsys.readouterr()
    assert "step ledger/points_ledger failed after" in captured.err and "disk full" in captured.err
    assert "will retry" in captured.err  # the step's retry policy, shown as it happens
    assert re.search(r"Z not run: .*warehouse/published", captured.err)
    assert "published    " in captured.out and "(not updated by this run)" in captured.out
    assert (_fingerprint(published), sorted((p.name, p.stat().st_mtime_ns) for p in parquet.iterdir())) == before


def test_a_failed_blocking_check_leaves_the_published_copy_untouched(done, tmp_path, monkeypatch, capsys):
    run = done.copy(tmp_path / "copy")
    published = run.settings.published_warehouse
    before = _fingerprint(published)
    with duckdb.connect(str(run.settings.warehouse)) as con:  # break conservation behind the pipeline's back
        con.execute("update core.ingest_files set records_read = records_read + 1 where path like 'brevo/01%'")
    assert run.run(monkeypatch) == 1
    err = capsys.readouterr().err
    assert "step check core/ingest_files:conservation failed" in err
    assert re.search(r"Z not run: .*warehouse/published", err)
    assert _fingerprint(published) == before


def test_analysts_query_the_published_file_while_a_second_run_is_in_progress(done, tmp_path):
    run = done.copy(tmp_path / "copy")
    published = run.settings.published_warehouse
    [(expected,)] = _rows(published, "select count(*) from marts.customer_rfm")
    first_inode = published.stat().st_ino
    # An analyst who opened the file before the run (in a separate database instance: ATTACH, not the cached one).
    held = duckdb.connect()
    held.execute(f"attach '{published}' as before_run (read_only)")

    second = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main())", *run.args()],
        cwd=tmp_path,
        env=run.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    results, inodes = [], set()
    try:
        while second.poll() is None:
            inodes.add(published.stat().st_ino)
            try:
                with duckdb.connect(str(published), read_only=True) as con:
                    results.append(con.execute("select count(*) from marts.customer_rfm").fetchone()[0])
            except duckdb.Error as exc:  # what an analyst would see
                results.append(exc)
            time.sleep(0.2)  # an analyst's pace; leaves the CPU to the run
        output = second.communicate(timeout=60)[0]
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, output
    inodes.add(published.stat().st_ino)
    assert first_inode != published.stat().st_ino  # the second run did swap in a new copy
    assert len(inodes) == 2  # and the queries ran on both sides of the swap
    assert len(results) > 10
    assert [r for r in results if not isinstance(r, int)] == []  # every query succeeded
    assert set(results) == {expected}
    assert held.execute("select count(*) from before_run.marts.customer_rfm").fetchone()[0] == expected
    held.close()


# --- daily segment exports ---------------------------------------------------------------------------------------


def test_every_segment_in_every_format_lands_in_the_days_folder(done):
    day = done.settings.as_of.isoformat()
    folder = done.settings.exports_dir / day
    segments = known_segments_of(done)
    assert len(segments) == 10
    expected = sorted(f"{fmt}/{segment_slug(s)}.csv" for fmt in FORMATS for s in segments)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.csv")) == expected
    assert (folder / "brevo" / "can_t_lose_them.csv").read_text(encoding="utf-8").startswith("EMAIL;SMS;")
    assert [p.name for p in done.settings.exports_dir.iterdir()] == [day]  # no hidden temporary folder left


def known_segments_of(run) -> list[str]:
    with duckdb.connect(str(run.settings.warehouse), read_only=True) as con:
        return known_segments(con)


def test_segment_slugs():
    assert segment_slug("Can't Lose Them") == "can_t_lose_them"
    assert segment_slug("At Risk") == "at_risk"
    assert segment_slug("  Über-Loyal 2 ") == "ber_loyal_2"


def test_exports_replace_the_days_folder_as_a_whole(done, tmp_path, monkeypatch):
    folder = tmp_path / "exports" / "2024-12-31"
    (folder / "brevo").mkdir(parents=True)
    (folder / "brevo" / "old_segment.csv").write_text("from an earlier run")
    with duckdb.connect(str(done.settings.warehouse), read_only=True) as con:
        written = export_all_segments(con, folder)
        assert len(written.files) == 40 and all(p.exists() for p in written.files)
        assert not (folder / "brevo" / "old_segment.csv").exists()
        assert written.contacts["Champions"] == len((folder / "csv" / "champions.csv").read_text().splitlines()) - 1
        for fmt in FORMATS:  # each file is what `loyalty export` writes for that one segment
            for segment in known_segments(con):
                one = export_segments(con, [segment], fmt, tmp_path / "one.csv")
                assert (folder / fmt / f"{segment_slug(segment)}.csv").read_bytes() == one.path.read_bytes()
                assert written.skipped_without_contact[segment] == one.skipped_without_contact

        calls = []
        real = exports._write_contacts

        def fails_halfway(*args):
            calls.append(1)
            if len(calls) == 5:
                raise OSError("disk full")
            return real(*args)

        monkeypatch.setattr(exports, "_write_contacts", fails_halfway)
        before = sorted((p, p.read_bytes()) for p in folder.rglob("*.csv"))
        with pytest.raises(OSError):
            export_all_segments(con, folder)
    assert sorted((p, p.read_bytes()) for p in folder.rglob("*.csv")) == before  # the previous day's files stand
    assert [p.name for p in folder.parent.iterdir()] == ["2024-12-31"]


def test_the_marts_are_as_of_the_runs_date(seed_run) -> None:
    """`loyalty run --as-of D` hands D to dbt (as LOYALTY_AS_OF, see pipelines/defs/dbt.py): every mart that
    states its as-of date states D, not today."""
    with duckdb.connect(str(seed_run.settings.warehouse), read_only=True) as con:
        dates = con.sql(
            "select distinct as_of from marts.customer_rfm "
            "union select distinct as_of from marts.customer_lifetime_value"
        ).fetchall()
    assert dates == [(seed_run.settings.as_of,)]
