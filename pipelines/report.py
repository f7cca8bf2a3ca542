"""The loyalty report (issue #5): the marts as charts a person would rather look at than query.

`build_report` reads the marts (read-only, so it can run beside an analyst's session) and writes into one directory:
- `report.html`: headline numbers and every chart, self-contained. Each chart is an SVG inlined as a `data:` URI, so
  the page opens offline, from a mail attachment or a file share: no script, stylesheet or font is fetched. SVGs go
  in `<img>` rather than inline `<svg>` because Vega names its clip paths `clip1`, `clip2`, ... in every chart, and
  inline SVGs share one id space: the second chart would be clipped by the first one's paths.
- one PNG per chart (2x scale) for slides and e-mails.

Charts are Vega-Lite specs written with Altair and rendered in-process by vl-convert: no browser, no network. Each
chart keeps the rows it was drawn from (`ChartResult.data`), embedded in the HTML as JSON beside the picture, so a
reader can check a number and the tests can compare the charts with the marts.
"""

from __future__ import annotations

import base64
import calendar
import html
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import altair as alt
import duckdb
import polars as pl
import vl_convert

from pipelines import warehouse
from pipelines.rules import Rules, load_rules

# The marts the report reads: the Dagster asset depends on exactly these.
MARTS_READ = (
    "customer_rfm",
    "rfm_segment_summary",
    "tier_migration",
    "points_redemption",
    "order_value_trend",
    "customer_lifetime_value",
    "dim_customers",
)
HTML_NAME = "report.html"
PNG_SCALE = 2  # 2x: sharp on a slide or a high-density screen
MIGRATION_MONTHS = 12  # the tier migration matrix sums the moves of the trailing year
TREND_MONTHS = 24  # the monthly charts show two years at most: readable bars, a year-on-year comparison

INK, MUTED, GRID = "#1f2933", "#52606d", "#e4e7eb"
BLUE, TEAL, ORANGE = "#1f5f99", "#2a9d8f", "#e76f51"
REDEMPTION_LABEL, BREAKAGE_LABEL = "Redemption rate (redeemed ÷ earned)", "Breakage (expired ÷ earned)"
MOVEMENT_COLOURS = {"upgrade": "#b7e1c1", "retained": "#dde3e9", "downgrade": "#f6c1bd"}
SOURCE_NAMES = {"brevo": "Brevo", "bonifiq": "BonifiQ", "esputnik": "eSputnik"}  # as the vendors write them
SOURCE_COLOURS = ["#1f5f99", "#2a9d8f", "#e9c46a", "#e76f51", "#8e7dbe"]

# One look for every chart: readable at slide size, no chart borders, titles left-aligned like a slide heading.
CHART_CONFIG = {
    "font": "Helvetica, Arial, sans-serif",
    "background": "white",
    "padding": 16,
    "view": {"stroke": None},
    "title": {
        "fontSize": 18,
        "subtitleFontSize": 13,
        "subtitleColor": MUTED,
        "anchor": "start",
        "color": INK,
        "offset": 12,
    },
    "axis": {
        "labelFontSize": 12,
        "titleFontSize": 13,
        "titleColor": INK,
        "labelColor": MUTED,
        "gridColor": GRID,
        "domainColor": "#9aa5b1",
        "tickColor": "#9aa5b1",
        "titlePadding": 10,
    },
    "legend": {"labelFontSize": 12, "titleFontSize": 12, "orient": "top"},
    "header": {"labelFontSize": 13, "titleFontSize": 13},
    "concat": {"spacing": 40},
}


class ReportError(ValueError):
    """The report cannot be built as asked (bad usage: exit 2), e.g. no warehouse, or an as-of it was not run for."""


@dataclass(frozen=True)
class ChartResult:
    """One chart: where its PNG is, and the rows it was drawn from (empty when the marts had nothing to show)."""

    name: str
    title: str
    caption: str
    png: Path
    data: pl.DataFrame

    @property
    def empty(self) -> bool:
        return self.data.is_empty()


@dataclass(frozen=True)
class ReportResult:
    out_dir: Path
    html: Path
    as_of: date
    reporting_currency: str
    headline: dict[str, float | int | None]
    charts: list[ChartResult] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [self.html, *(chart.png for chart in self.charts)]

    def chart(self, name: str) -> ChartResult:
        return next(chart for chart in self.charts if chart.name == name)


@dataclass(frozen=True)
class _Context:
    """What every chart query needs: the connection, which marts exist, the as-of date and the rules' labels."""

    con: duckdb.DuckDBPyConnection
    marts: frozenset[str]
    as_of: date
    currency: str
    tiers: tuple[str, ...]
    horizon: str

    @property
    def as_of_text(self) -> str:
        return f"{self.as_of:%-d %b %Y}"

    @property
    def as_of_month(self) -> date:
        return self.as_of.replace(day=1)

    @property
    def partial_month_note(self) -> str:
        """The as-of month is partial unless the as-of date is its last day: say so where months are compared."""
        last_day = calendar.monthrange(self.as_of.year, self.as_of.month)[1]
        if self.as_of.day == last_day:
            return ""
        return f" {self.as_of:%B %Y} is partial (to {self.as_of_text})."

    def has(self, *marts: str) -> bool:
        return set(marts) <= self.marts

    def frame(self, sql: str, params: Sequence[object] = ()) -> pl.DataFrame:
        return self.con.execute(sql, list(params)).pl()

    def scalar(self, sql: str, params: Sequence[object] = ()) -> object:
        row = self.con.execute(sql, list(params)).fetchone()
        return row[0] if row else None


@dataclass(frozen=True)
class _Chart:
    name: str
    title: str
    caption: str
    data: pl.DataFrame
    spec: dict


# ---------------------------------------------------------------------------------------------------------------------
# Entry points


def build_report(
    con_or_warehouse: duckdb.DuckDBPyConnection | str | Path,
    out_dir: str | Path,
    as_of: date | None = None,
    *,
    rules: Rules | None = None,
) -> ReportResult:
    """Write report.html and one PNG per chart into out_dir, from the marts of a warehouse (opened read-only).

    `as_of` labels the report and must be the date the marts were built as of (a report cannot recompute them for
    another day); left out, it is read from the marts. `rules` give the tier order and the lifetime value horizon
    (default: the packaged rules).
    """
    if isinstance(con_or_warehouse, str | Path):
        path = Path(con_or_warehouse)
        if not path.is_file():
            raise ReportError(f"warehouse {path} does not exist: run `loyalty run` first")
        with warehouse.connect(path, read_only=True) as con:
            return _build(con, Path(out_dir), as_of, rules)
    return _build(con_or_warehouse, Path(out_dir), as_of, rules)


def warehouse_as_of(con: duckdb.DuckDBPyConnection) -> date | None:
    """The as-of date the marts were last built for, or None when there are none (never built, or empty)."""
    marts = warehouse.table_names(con, "marts")
    for mart in ("rfm_segment_summary", "customer_rfm", "customer_lifetime_value"):
        if mart in marts:
            value = con.execute(f"select max(as_of) from marts.{mart}").fetchone()[0]
            if value is not None:
                return value
    return None


def _build(con: duckdb.DuckDBPyConnection, out_dir: Path, as_of: date | None, rules: Rules | None) -> ReportResult:
    rules = rules or load_rules()
    marts = frozenset(warehouse.table_names(con, "marts"))
    built_as_of = warehouse_as_of(con)
    if as_of is not None and built_as_of is not None and as_of != built_as_of:
        raise ReportError(
            f"the marts are as of {built_as_of}, not {as_of}: run `loyalty run --as-of {as_of}` first, "
            "or leave out --as-of"
        )
    currency = None
    if "rfm_segment_summary" in marts:
        currency = con.execute("select any_value(reporting_currency) from marts.rfm_segment_summary").fetchone()[0]
    horizon_days = rules.clv.time_unit_days * rules.clv.horizon_units
    ctx = _Context(
        con=con,
        marts=marts,
        as_of=as_of or built_as_of or datetime.now(UTC).date(),
        currency=currency or rules.reporting_currency,
        tiers=tuple(tier.name for tier in rules.tiers),
        horizon=f"{horizon_days // 7} weeks" if horizon_days % 7 == 0 else f"{horizon_days} days",
    )
    charts = [builder(ctx) for builder in CHARTS]
    headline = _headline(ctx)
    # Render everything before touching out_dir: a failure leaves the previous report as it was.
    pngs = {chart.name: vl_convert.vegalite_to_png(chart.spec, scale=PNG_SCALE) for chart in charts}
    svgs = {chart.name: vl_convert.vegalite_to_svg(_without_title(chart.spec)) for chart in charts}
    page = _html(ctx, headline, charts, svgs)
    files = {f"{chart.name}.png": pngs[chart.name] for chart in charts} | {HTML_NAME: page.encode()}
    _write_atomically(out_dir, files)
    return ReportResult(
        out_dir=out_dir,
        html=out_dir / HTML_NAME,
        as_of=ctx.as_of,
        reporting_currency=ctx.currency,
        headline=headline,
        charts=[ChartResult(c.name, c.title, c.caption, out_dir / f"{c.name}.png", c.data) for c in charts],
    )


def _write_atomically(out_dir: Path, files: dict[str, bytes]) -> None:
    """Each file is written in full beside its target and renamed over it, the page last, so a reader (a browser, a
    file share, the Dagster UI) never opens a half-written file. The directory itself is never swapped or cleared:
    --out may be a directory that holds other things."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".report-") as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        for name in sorted(files, key=lambda n: n == HTML_NAME):
            os.replace(Path(tmp) / name, out_dir / name)


# ---------------------------------------------------------------------------------------------------------------------
# Headline numbers


def _headline(ctx: _Context) -> dict[str, float | int | None]:
    """The five numbers at the top of the page; None where the mart they come from is missing or empty."""
    numbers: dict[str, float | int | None] = dict.fromkeys(
        [
            "customers",
            "scored_customers",
            "delivered_orders",
            "revenue",
            "outstanding_points",
            "liability",
            "redemption_rate",
            "breakage",
        ]
    )
    if ctx.has("dim_customers"):
        numbers["customers"] = ctx.scalar("select count(*) from marts.dim_customers")
    if ctx.has("customer_rfm"):
        numbers["scored_customers"] = ctx.scalar("select count(*) from marts.customer_rfm")
    if ctx.has("order_value_trend"):
        delivered, revenue = ctx.con.execute(
            "select sum(delivered), cast(sum(revenue) as double) from marts.order_value_trend"
        ).fetchone()
        numbers["delivered_orders"] = int(delivered or 0)
        numbers["revenue"] = float(revenue or 0.0)
    if ctx.has("points_redemption"):
        # Outstanding and liability at the end of the as-of month: the points members can still redeem today.
        outstanding, liability, redeemed, expired, earned = ctx.con.execute(
            """select sum(outstanding_points) filter (where month = ?),
                      cast(sum(liability) filter (where month = ?) as double),
                      sum(redeemed), sum(expired), sum(earned)
               from marts.points_redemption""",
            [ctx.as_of_month, ctx.as_of_month],
        ).fetchone()
        numbers["outstanding_points"] = int(outstanding or 0)
        numbers["liability"] = float(liability or 0.0)
        # As the mart defines them: redeemed ÷ earned and expired ÷ earned (bonus points not in earned), all months.
        numbers["redemption_rate"] = float(redeemed) / float(earned) if earned else None
        numbers["breakage"] = float(expired) / float(earned) if earned else None
    return numbers


# ---------------------------------------------------------------------------------------------------------------------
# The charts: each reads its rows with one query and returns them with a Vega-Lite spec.


def _rfm_grid(ctx: _Context) -> _Chart:
    title = "RFM grid: where customers and revenue sit"
    data = pl.DataFrame()
    if ctx.has("customer_rfm") and ctx.scalar("select count(*) from marts.customer_rfm"):
        # Every cell of the 5 × 5 grid, empty ones too, named after the segment map (the dbt seed) when it is there.
        segment_map = (
            "(select r_score, f_score, segment from staging.rfm_segments)"
            if "rfm_segments" in warehouse.table_names(ctx.con, "staging")
            else "(select null::integer as r_score, null::integer as f_score, null::varchar as segment)"
        )
        data = ctx.frame(
            f"""with cells as (
                    select r_score, f_score, count(*) as customers, cast(sum(monetary) as double) as revenue,
                           min(segment) as segment
                    from marts.customer_rfm
                    group by r_score, f_score
                ),
                grid as (
                    select r.range::integer as r_score, f.range::integer as f_score
                    from range(1, 6) as r cross join range(1, 6) as f
                )
                select grid.r_score, grid.f_score, coalesce(seg.segment, cells.segment) as segment,
                       coalesce(cells.customers, 0) as customers, coalesce(cells.revenue, 0) as revenue
                from grid
                left join cells on cells.r_score = grid.r_score and cells.f_score = grid.f_score
                left join {segment_map} as seg on seg.r_score = grid.r_score and seg.f_score = grid.f_score
                order by grid.f_score desc, grid.r_score"""
        )
    if data.is_empty():
        return _no_data("rfm_grid", title, ctx, "no customer has a delivered order in the RFM window", "customer_rfm")
    customers, revenue = int(data["customers"].sum()), float(data["revenue"].sum())
    caption = (
        f"Customers (left) and their delivered revenue in the RFM window (right) per recency × frequency score, "
        f"as of {ctx.as_of_text}; {customers:,} customers scored, {revenue:,.0f} {ctx.currency}. "
        "Each cell names its segment. Source: marts.customer_rfm."
    )

    def panel(measure: str, scheme: str, heading: str, label_format: str) -> alt.LayerChart:
        threshold = float(data[measure].max()) * 0.55  # white text on the dark cells
        text_colour = alt.condition(f"datum.{measure} > {threshold}", alt.value("white"), alt.value(INK))
        base = alt.Chart(_chart_frame(data)).encode(
            x=alt.X("r_score:O", title="Recency score (5 = bought most recently)", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("f_score:O", title="Frequency score (5 = most orders)", sort="descending"),
        )
        cells = base.mark_rect(stroke="white", strokeWidth=2, cornerRadius=3).encode(
            color=alt.Color(f"{measure}:Q", scale=alt.Scale(scheme=scheme), legend=None),
            tooltip=[
                "segment:N",
                alt.Tooltip("customers:Q", format=","),
                alt.Tooltip("revenue:Q", format=",.0f", title=f"revenue ({ctx.currency})"),
            ],
        )
        values = base.mark_text(fontSize=15, fontWeight="bold", baseline="bottom", dy=2).encode(
            text=alt.Text(f"{measure}:Q", format=label_format), color=text_colour
        )
        names = base.mark_text(fontSize=9, baseline="top", dy=6).encode(text="segment:N", color=text_colour)
        return (cells + values + names).properties(width=440, height=440, title=_panel_title(heading))

    spec = (
        alt.hconcat(
            panel("customers", "blues", "Customers", ","),
            panel("revenue", "greens", f"Revenue ({ctx.currency})", ",.3~s"),
        )
        .resolve_scale(color="independent")
        .properties(title=_title(title, f"Recency × frequency scores as of {ctx.as_of_text}"))
    )
    return _Chart("rfm_grid", title, caption, data, _spec(spec))


def _segment_sizes(ctx: _Context) -> _Chart:
    title = "RFM segments: customers and revenue"
    data = pl.DataFrame()
    if ctx.has("rfm_segment_summary"):
        data = ctx.frame(
            """select segment, customers, coalesce(share, 0) as share,
                      cast(coalesce(revenue, 0) as double) as revenue,
                      cast(avg_monetary as double) as avg_monetary
               from marts.rfm_segment_summary
               order by customers desc, revenue desc, segment"""
        )
    if data.is_empty() or data["customers"].sum() == 0:
        return _no_data("segment_sizes", title, ctx, "no customer is in an RFM segment", "rfm_segment_summary")
    top = data.row(0, named=True)
    caption = (
        f"Customers per RFM segment with their share of the {int(data['customers'].sum()):,} scored customers "
        f"(left), and the segment's delivered revenue in the RFM window in {ctx.currency} (right), as of "
        f"{ctx.as_of_text}. Largest: {top['segment']} ({top['share']:.0%}). Source: marts.rfm_segment_summary."
    )
    order = data["segment"].to_list()
    base = alt.Chart(_chart_frame(data)).encode(y=alt.Y("segment:N", sort=order, title=None))
    customers = base.mark_bar(color=BLUE, cornerRadiusEnd=3).encode(
        x=alt.X("customers:Q", title="Customers", axis=alt.Axis(format=",.0f")),
        tooltip=["segment:N", alt.Tooltip("customers:Q", format=","), alt.Tooltip("share:Q", format=".1%")],
    ) + base.mark_text(align="left", dx=4, color=INK, fontSize=12).transform_calculate(
        label="format(datum.customers, ',') + '  (' + format(datum.share, '.0%') + ')'"
    ).encode(x="customers:Q", text="label:N")
    revenue = base.mark_bar(color=TEAL, cornerRadiusEnd=3).encode(
        x=alt.X("revenue:Q", title=f"Revenue in the RFM window ({ctx.currency})", axis=_compact_axis()),
        tooltip=["segment:N", alt.Tooltip("revenue:Q", format=",.0f"), alt.Tooltip("avg_monetary:Q", format=",.0f")],
    ) + base.mark_text(align="left", dx=4, color=INK, fontSize=12).encode(
        x="revenue:Q", text=alt.Text("revenue:Q", format=",.3~s")
    )
    spec = alt.hconcat(
        customers.properties(width=360, height=360),
        revenue.encode(y=alt.Y("segment:N", sort=order, title=None, axis=None)).properties(width=360, height=360),
        spacing=60,
    ).properties(title=_title(title, f"Segments as of {ctx.as_of_text}, largest first"))
    return _Chart("segment_sizes", title, caption, data, _spec(spec))


def _tier_migration(ctx: _Context) -> _Chart:
    title = "Tier migration over the last 12 months"
    first_month = _months_before(ctx.as_of_month, MIGRATION_MONTHS - 1)
    moves = pl.DataFrame()
    if ctx.has("tier_migration"):
        moves = ctx.frame(
            """select tier_from, tier_to, sum(customers)::bigint as customers,
                      sum(new_members)::bigint as new_members
               from marts.tier_migration
               where month between ? and ?
               group by tier_from, tier_to""",
            [first_month, ctx.as_of_month],
        )
    if moves.is_empty() or moves["customers"].sum() == 0:
        return _no_data(
            "tier_migration", title, ctx, "no loyalty member held a tier in the last 12 months", "tier_migration"
        )
    # Rows and columns in the rules' tier order (lowest first); a tier the rules no longer list goes last.
    present = set(moves["tier_from"].to_list()) | set(moves["tier_to"].to_list())
    tiers = [*ctx.tiers, *sorted(present - set(ctx.tiers))]
    tiers = [tier for tier in tiers if tier in present or tier in ctx.tiers]
    rank = pl.DataFrame({"tier": tiers, "rank": list(range(len(tiers)))})
    data = (
        rank.rename({"tier": "tier_from", "rank": "from_rank"})
        .join(rank.rename({"tier": "tier_to", "rank": "to_rank"}), how="cross")
        .join(moves, on=["tier_from", "tier_to"], how="left")
        .with_columns(pl.col("customers", "new_members").fill_null(0))
        .with_columns(
            movement=pl.when(pl.col("to_rank") > pl.col("from_rank"))
            .then(pl.lit("upgrade"))
            .when(pl.col("to_rank") < pl.col("from_rank"))
            .then(pl.lit("downgrade"))
            .otherwise(pl.lit("retained")),
            row_share=pl.col("customers") / pl.col("customers").sum().over("tier_from"),
        )
        .with_columns(pl.col("row_share").fill_nan(None))
        .sort("from_rank", "to_rank")
    )
    upgrades = int(data.filter(pl.col("movement") == "upgrade")["customers"].sum())
    downgrades = int(data.filter(pl.col("movement") == "downgrade")["customers"].sum())
    caption = (
        f"Members by tier at the end of one month (rows) and of the next (columns), summed over the 12 months "
        f"{first_month:%b %Y} – {ctx.as_of:%b %Y}, as of {ctx.as_of_text}: {upgrades:,} upgrades, {downgrades:,} "
        "downgrades. A member counts once per month, so the diagonal (kept their tier) holds member-months; "
        "a new member starts from the lowest tier. Percentages are of the row. "
        f"Source: marts.tier_migration.{ctx.partial_month_note}"
    )
    base = alt.Chart(_chart_frame(data)).encode(
        x=alt.X("tier_to:N", sort=tiers, title="Tier at month end", axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("tier_from:N", sort=tiers, title="Tier a month earlier"),
    )
    # Empty cells stay near-white with a dash: the colour says which way members moved, only where some did.
    cells = base.mark_rect(stroke="white", strokeWidth=3, cornerRadius=3).encode(
        color=alt.condition(
            "datum.customers > 0",
            alt.Color(
                "movement:N",
                scale=alt.Scale(domain=list(MOVEMENT_COLOURS), range=list(MOVEMENT_COLOURS.values())),
                legend=alt.Legend(
                    title=None,
                    orient="bottom",
                    symbolType="square",
                    symbolSize=200,
                    labelExpr="{'upgrade': 'Upgrade', 'retained': 'Kept tier', 'downgrade': 'Downgrade'}[datum.label]",
                ),
            ),
            alt.value("#f9fafb"),
        ),
        tooltip=[
            "tier_from:N",
            "tier_to:N",
            alt.Tooltip("customers:Q", format=","),
            alt.Tooltip("row_share:Q", format=".1%"),
            alt.Tooltip("new_members:Q", format=","),
        ],
    )
    counts = (
        base.transform_calculate(label="datum.customers > 0 ? format(datum.customers, ',') : '–'")
        .mark_text(fontSize=16, fontWeight="bold", baseline="bottom", dy=2)
        .encode(text="label:N", color=alt.condition("datum.customers > 0", alt.value(INK), alt.value("#b0b8c1")))
    )
    shares = (
        base.transform_filter("datum.customers > 0")
        .mark_text(fontSize=11, color=MUTED, baseline="top", dy=6)
        .encode(text=alt.Text("row_share:Q", format=".1%"))
    )
    side = 115 * len(tiers)
    spec = (cells + counts + shares).properties(
        width=side, height=side, title=_title(title, f"Member-months, {first_month:%b %Y} – {ctx.as_of:%b %Y}")
    )
    return _Chart("tier_migration", title, caption, data, _spec(spec))


def _points_redemption(ctx: _Context) -> _Chart:
    title = "Points: redemption, breakage and outstanding liability"
    data = pl.DataFrame()
    if ctx.has("points_redemption"):
        data = ctx.frame(
            """select month, sum(members)::bigint as members, sum(earned)::bigint as earned,
                      sum(bonus)::bigint as bonus, sum(redeemed)::bigint as redeemed, sum(expired)::bigint as expired,
                      sum(redeemed) / nullif(sum(earned), 0) as redemption_rate,
                      sum(expired) / nullif(sum(earned), 0) as breakage,
                      sum(outstanding_points)::bigint as outstanding_points,
                      cast(sum(liability) as double) as liability
               from marts.points_redemption
               where month between ? and ?
               group by month
               order by month""",
            [_months_before(ctx.as_of_month, TREND_MONTHS - 1), ctx.as_of_month],
        )
    if data.is_empty():
        return _no_data("points_redemption", title, ctx, "no points have been posted", "points_redemption")
    # Every month from the first shown to the as-of month, so the bars keep their place in time: a month without
    # members has no flows and no liability.
    flows = ["members", "earned", "bonus", "redeemed", "expired", "outstanding_points", "liability"]
    data = (
        _month_spine(data["month"].min(), ctx.as_of_month)
        .join(data, on="month", how="left")
        .with_columns(pl.col(flows).fill_null(0))
        .select(data.columns)
    )
    last = data.row(-1, named=True)
    caption = (
        f"Per month: points redeemed and points expired as a share of the points earned that month (bonus points "
        f"not counted in earned), and the liability of the points members can still redeem at the month end "
        f"({last['outstanding_points']:,} points = {last['liability']:,.2f} {ctx.currency} at the end of "
        f"{last['month']:%B %Y}), {data['month'][0]:%b %Y} – {ctx.as_of:%b %Y}, as of {ctx.as_of_text}. "
        f"Source: marts.points_redemption.{ctx.partial_month_note}"
    )
    month = _month_axis(data["month"])
    rates = (
        alt.Chart(_chart_frame(data))
        .transform_fold(["redemption_rate", "breakage"], as_=["measure", "value"])
        .transform_calculate(measure=f"datum.measure == 'breakage' ? '{BREAKAGE_LABEL}' : '{REDEMPTION_LABEL}'")
        .mark_line(point=True, strokeWidth=2.5)
        .encode(
            x=month,
            y=alt.Y("value:Q", title="Share of points earned in the month", axis=alt.Axis(format="%")),
            color=alt.Color(
                "measure:N",
                title=None,
                scale=alt.Scale(domain=[REDEMPTION_LABEL, BREAKAGE_LABEL], range=[BLUE, ORANGE]),
                legend=alt.Legend(labelLimit=400),
            ),
            tooltip=[
                alt.Tooltip("month:T", timeUnit="utcyearmonth", title="month", format="%b %Y"),
                "measure:N",
                alt.Tooltip("value:Q", format=".1%"),
            ],
        )
        .properties(width=760, height=220)
    )
    liability = (
        alt.Chart(_chart_frame(data))
        .mark_bar(color=TEAL, cornerRadiusEnd=2)
        .encode(
            x=month,
            y=alt.Y("liability:Q", title=f"Liability at month end ({ctx.currency})", axis=_compact_axis()),
            tooltip=[
                alt.Tooltip("month:T", timeUnit="utcyearmonth", title="month", format="%b %Y"),
                alt.Tooltip("outstanding_points:Q", format=","),
                alt.Tooltip("liability:Q", format=",.2f"),
            ],
        )
        .properties(width=760, height=220)
    )
    spec = alt.vconcat(rates, liability, spacing=24).properties(
        title=_title(title, f"By month, {data['month'][0]:%b %Y} – {ctx.as_of:%b %Y}, as of {ctx.as_of_text}")
    )
    return _Chart("points_redemption", title, caption, data, _spec(spec))


def _order_value_trend(ctx: _Context) -> _Chart:
    title = "Orders: delivered revenue and average order value"
    data = pl.DataFrame()
    if ctx.has("order_value_trend"):
        data = ctx.frame(
            """select order_month as month, source, sum(orders)::bigint as orders,
                      sum(delivered)::bigint as delivered, sum(cancelled)::bigint as cancelled,
                      cast(sum(revenue) as double) as revenue
               from marts.order_value_trend
               where order_month between ? and ?
               group by order_month, source
               order by order_month, source""",
            [_months_before(ctx.as_of_month, TREND_MONTHS - 1), ctx.as_of_month],
        )
    if data.is_empty():
        return _no_data(
            "order_value_trend", title, ctx, "no order was placed up to the as-of date", "order_value_trend"
        )
    # Every month × source from the first month shown to the as-of month: a month without orders is a gap in time,
    # not a month to leave out. AOV of a month is Σ revenue ÷ Σ delivered over its sources, never a mean of AOVs.
    counts = ["orders", "delivered", "cancelled", "revenue"]
    data = (
        _month_spine(data["month"].min(), ctx.as_of_month)
        .join(data.select("source").unique().sort("source"), how="cross")
        .join(data, on=["month", "source"], how="left")
        .with_columns(pl.col(counts).fill_null(0))
        .select(data.columns)
    )
    data = data.with_columns(
        month_revenue=pl.col("revenue").sum().over("month"),
        month_delivered=pl.col("delivered").sum().over("month"),
    ).with_columns(
        month_aov=pl.when(pl.col("month_delivered") > 0).then(pl.col("month_revenue") / pl.col("month_delivered"))
    )
    total_revenue, total_delivered = float(data["revenue"].sum()), int(data["delivered"].sum())
    caption = (
        f"Per month of placement: revenue of the delivered orders by source (top, {ctx.currency}) and the average "
        f"order value over all sources (bottom, Σ revenue ÷ Σ delivered orders), {data['month'][0]:%b %Y} – "
        f"{ctx.as_of:%b %Y}, as of {ctx.as_of_text}: {total_delivered:,} delivered orders, {total_revenue:,.0f} "
        f"{ctx.currency} in these months. Orders placed late in "
        f"a month may still be pending. Source: marts.order_value_trend.{ctx.partial_month_note}"
    )
    month = _month_axis(data["month"])
    sources = sorted(data["source"].unique().to_list())
    revenue = (
        alt.Chart(_chart_frame(data))
        .mark_bar()
        .encode(
            x=month,
            y=alt.Y("revenue:Q", title=f"Delivered revenue ({ctx.currency})", axis=_compact_axis()),
            color=alt.Color(
                "source:N",
                title="Source",
                sort=sources,
                scale=alt.Scale(domain=sources, range=SOURCE_COLOURS),
                legend=alt.Legend(labelExpr=f"({json.dumps(SOURCE_NAMES)})[datum.label] || datum.label"),
            ),
            order=alt.Order("source:N"),
            tooltip=[
                alt.Tooltip("month:T", timeUnit="utcyearmonth", title="month", format="%b %Y"),
                "source:N",
                alt.Tooltip("revenue:Q", format=",.0f"),
                alt.Tooltip("delivered:Q", format=","),
            ],
        )
        .properties(width=760, height=260)
    )
    aov = (
        alt.Chart(_chart_frame(data.unique("month", keep="first", maintain_order=True)))
        .mark_line(point=alt.OverlayMarkDef(color=INK, size=40), color=INK, strokeWidth=2.5)
        .encode(
            x=month,
            y=alt.Y("month_aov:Q", title=f"Average order value ({ctx.currency})", scale=alt.Scale(zero=False)),
            tooltip=[
                alt.Tooltip("month:T", timeUnit="utcyearmonth", title="month", format="%b %Y"),
                alt.Tooltip("month_aov:Q", format=",.2f", title="AOV"),
                alt.Tooltip("month_delivered:Q", format=",", title="delivered orders"),
            ],
        )
        .properties(width=760, height=160)
    )
    subtitle = f"By month of placement, {data['month'][0]:%b %Y} – {ctx.as_of:%b %Y}, as of {ctx.as_of_text}"
    spec = alt.vconcat(revenue, aov, spacing=24).properties(title=_title(title, subtitle))
    return _Chart("order_value_trend", title, caption, data, _spec(spec))


def _lifetime_value(ctx: _Context) -> _Chart:
    title = f"Customer lifetime value: predicted revenue over the next {ctx.horizon}"
    data = pl.DataFrame()
    if ctx.has("customer_lifetime_value"):
        p99 = ctx.scalar("select quantile_cont(clv, 0.99) from marts.customer_lifetime_value where clv is not null")
        if p99 is not None:
            edges = clv_band_edges(float(p99))
            segment = "coalesce(rfm.segment, 'Not scored')" if ctx.has("customer_rfm") else "'Not scored'"
            rfm_join = (
                "left join marts.customer_rfm as rfm on rfm.customer_id = clv.customer_id"
                if ctx.has("customer_rfm")
                else ""
            )
            # A customer's band is the number of edges at or below their CLV (edges start at 0).
            data = ctx.frame(
                f"""with banded as (
                        select len(list_filter(?::double[], edge -> edge <= clv.clv)) - 1 as band_index,
                               {segment} as segment, clv.clv
                        from marts.customer_lifetime_value as clv
                        {rfm_join}
                        where clv.clv is not null
                    )
                    select band_index, segment, count(*)::bigint as customers, sum(clv) as clv_total
                    from banded
                    group by band_index, segment
                    order by band_index, segment""",
                [edges],
            )
            labels = pl.DataFrame(
                {"band_index": list(range(len(edges))), "band": clv_band_labels(edges)},
                schema={"band_index": pl.Int64, "band": pl.String},
            )
            data = data.with_columns(pl.col("band_index").cast(pl.Int64)).join(labels, on="band_index", how="left")
            data = data.select("band_index", "band", "segment", "customers", "clv_total")
    if data.is_empty():
        return _no_data(
            "lifetime_value", title, ctx, "no customer has a lifetime value prediction", "customer_lifetime_value"
        )
    stats = ctx.con.execute(
        """select median(clv), avg(clv), count(*) filter (where clv is null)
           from marts.customer_lifetime_value"""
    ).fetchone()
    median, mean, unpredicted = stats
    customers = int(data["customers"].sum())
    caption = (
        f"Predicted revenue per customer over the next {ctx.horizon} (BG/NBD × Gamma-Gamma), as of "
        f"{ctx.as_of_text}: customers per CLV band (left; bands widen to the right, the last one is open-ended) and "
        f"the predicted revenue summed by RFM segment (right). {customers:,} customers with a prediction; median "
        f"{median:,.0f} {ctx.currency}, mean {mean:,.0f} {ctx.currency}"
        + (f"; {unpredicted:,} without one (the fit did not apply to them)" if unpredicted else "")
        + ". Source: marts.customer_lifetime_value, marts.customer_rfm."
    )
    frame = _chart_frame(data)
    band_order = data.sort("band_index")["band"].unique(maintain_order=True).to_list()
    histogram = (
        alt.Chart(frame)
        .mark_bar(color=BLUE, cornerRadiusEnd=2)
        .encode(
            x=alt.X(
                "band:N",
                sort=band_order,
                title=f"Predicted CLV, next {ctx.horizon} ({ctx.currency})",
                axis=alt.Axis(labelAngle=0, labelFontSize=11),
            ),
            y=alt.Y("sum(customers):Q", title="Customers", axis=alt.Axis(format=",.0f")),
            tooltip=["band:N", alt.Tooltip("sum(customers):Q", format=",", title="customers")],
        )
    )
    histogram_labels = (
        alt.Chart(frame)
        .mark_text(baseline="bottom", dy=-3, fontSize=11, color=INK)
        .encode(x=alt.X("band:N", sort=band_order), y="sum(customers):Q", text=alt.Text("sum(customers):Q", format=","))
    )
    by_segment = (
        alt.Chart(frame)
        .transform_aggregate(clv_total="sum(clv_total)", customers="sum(customers)", groupby=["segment"])
        .encode(y=alt.Y("segment:N", sort="-x", title=None))
    )
    segment_bars = by_segment.mark_bar(color=TEAL, cornerRadiusEnd=3).encode(
        x=alt.X("clv_total:Q", title=f"Predicted revenue, next {ctx.horizon} ({ctx.currency})", axis=_compact_axis()),
        tooltip=["segment:N", alt.Tooltip("clv_total:Q", format=",.0f"), alt.Tooltip("customers:Q", format=",")],
    )
    segment_labels = by_segment.mark_text(align="left", dx=4, fontSize=12, color=INK).encode(
        x="clv_total:Q", text=alt.Text("clv_total:Q", format=",.3~s")
    )
    spec = alt.hconcat(
        (histogram + histogram_labels).properties(width=520, height=340),
        (segment_bars + segment_labels).properties(width=300, height=340),
        spacing=50,
    ).properties(title=_title(title, f"As of {ctx.as_of_text}"))
    return _Chart("lifetime_value", title, caption, data, _spec(spec))


CHARTS: tuple[Callable[[_Context], _Chart], ...] = (
    _rfm_grid,
    _segment_sizes,
    _tier_migration,
    _points_redemption,
    _order_value_trend,
    _lifetime_value,
)


# ---------------------------------------------------------------------------------------------------------------------
# CLV bands


NICE_STEPS = (1.0, 2.5, 5.0)
CLV_BANDS = 10


def clv_band_edges(p99: float) -> list[float]:
    """Lower edges of the CLV bands: 0, then a 1–2.5–5 series whose last edge is the first one at or above the 99th
    percentile, CLV_BANDS bands in all. CLV is long-tailed (a few customers are worth a hundred medians): equal-width
    bins would put nearly everyone in the first bar, and readable round edges matter more on a slide than equal
    widths. The last band is open-ended, so no customer falls outside."""
    series = [step * 10.0**exponent for exponent in range(-2, 12) for step in NICE_STEPS]
    top_index = next((i for i, edge in enumerate(series) if edge >= p99), len(series) - 1)
    top_index = max(top_index, CLV_BANDS - 2)
    return [0.0, *series[top_index - (CLV_BANDS - 2) : top_index + 1]]


def clv_band_labels(edges: Sequence[float]) -> list[str]:
    upper = [*(_compact(e) for e in edges[1:])]
    return [f"{_compact(low)}–{high}" for low, high in zip(edges, upper, strict=False)] + [f"{_compact(edges[-1])}+"]


def _compact(value: float) -> str:
    """1500 → 1.5k, 2500000 → 2.5M: the numbers on a band axis, short enough not to overlap."""
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:g}{suffix}"
    return f"{value:g}"


# ---------------------------------------------------------------------------------------------------------------------
# Spec helpers


def _title(text: str, subtitle: str) -> alt.TitleParams:
    return alt.TitleParams(text=text, subtitle=subtitle, anchor="start")


def _month_axis(months: pl.Series) -> alt.X:
    """Months as bands, so a month's bar and its point in the panel below line up; a label every `step` months,
    always on the last one. UTC time units: months are dates at midnight UTC, and a local time zone west of UTC
    would shift them into the month before."""
    step = max(1, -(-months.n_unique() // 12))
    last = months.max()
    offset = (last.year * 12 + last.month - 1) % step if last is not None else 0
    return alt.X(
        "month:O",
        timeUnit="utcyearmonth",
        title=None,
        axis=alt.Axis(
            labelAngle=-40,
            labelOverlap=False,  # the expression already thins the labels; Vega's own pass would hide them all
            labelExpr=f"(utcyear(datum.value) * 12 + utcmonth(datum.value)) % {step} == {offset} "
            "? utcFormat(datum.value, '%b %Y') : ''",
        ),
    )


def _compact_axis(**kwargs: object) -> alt.Axis:
    """Axis labels like 200k and 1.5M, each value on its own (Vega's "s" format gives every tick the prefix of the
    largest one: 0.2M, 0.4M)."""
    return alt.Axis(labelExpr="format(datum.value, '~s')", **kwargs)


def _panel_title(text: str) -> alt.TitleParams:
    return alt.TitleParams(text=text, fontSize=14, anchor="start", offset=8)


def _month_spine(first: date, last: date) -> pl.DataFrame:
    return pl.DataFrame({"month": pl.date_range(first, last, "1mo", eager=True)})


def _months_before(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 - count
    return date(index // 12, index % 12 + 1, 1)


def _chart_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows as Vega-Lite gets them: dates as ISO dates (parsed as UTC), decimals as floats."""
    return frame.with_columns(pl.col(pl.Date).dt.to_string("%Y-%m-%d"), pl.col(pl.Decimal).cast(pl.Float64))


def _spec(chart: alt.TopLevelMixin) -> dict:
    spec = chart.to_dict()
    spec["config"] = {**spec.get("config", {}), **CHART_CONFIG}
    return spec


def _without_title(spec: dict) -> dict:
    """The HTML shows the title and caption as text around the picture; the PNG carries them for slides."""
    return {key: value for key, value in spec.items() if key != "title"}


def _no_data(name: str, title: str, ctx: _Context, why: str, *marts: str) -> _Chart:
    """A chart that says there is nothing to show, and why, instead of an empty frame or a crash."""
    missing = [mart for mart in marts if not ctx.has(mart)]
    if missing:
        why = f"the warehouse has no {', '.join('marts.' + m for m in missing)}: run `loyalty run` first"
    message = pl.DataFrame({"headline": ["No data"], "why": [f"{why[0].upper()}{why[1:]} (as of {ctx.as_of_text})."]})
    base = alt.Chart(message)
    chart = (
        base.mark_text(fontSize=20, fontWeight="bold", color=MUTED, dy=-14).encode(text="headline:N")
        + base.mark_text(fontSize=14, color=MUTED, dy=14).encode(text="why:N")
    ).properties(width=760, height=120, title=_title(title, f"As of {ctx.as_of_text}"))
    caption = f"No data: {why} (as of {ctx.as_of_text})."
    return _Chart(name, title, caption, pl.DataFrame(), _spec(chart))


# ---------------------------------------------------------------------------------------------------------------------
# The page


PERCENT_COLUMNS = {"share", "row_share", "redemption_rate", "breakage"}

STYLE = """
:root { --ink: #1f2933; --muted: #52606d; --line: #e4e7eb; --card: #f5f7fa; --accent: #1f5f99; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 Helvetica, Arial, sans-serif; color: var(--ink); background: white; }
main { max-width: 1240px; margin: 0 auto; padding: 32px 24px 64px; }
header h1 { font-size: 28px; margin: 0 0 4px; }
header p { margin: 0; color: var(--muted); }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 16px; margin: 24px 0 8px; }
.kpi { background: var(--card); border-radius: 8px; padding: 16px 18px; border-left: 4px solid var(--accent); }
.kpi .label { font-size: 13px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.kpi .value { font-size: 28px; font-weight: bold; margin: 2px 0; }
.kpi .note { font-size: 13px; color: var(--muted); }
nav { margin: 16px 0 0; font-size: 14px; }
nav a { color: var(--accent); margin-right: 16px; text-decoration: none; }
section { border-top: 1px solid var(--line); margin-top: 40px; padding-top: 24px; }
section h2 { font-size: 21px; margin: 0 0 12px; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); margin-top: 8px; max-width: 900px; }
details { margin-top: 10px; font-size: 13px; }
summary { cursor: pointer; color: var(--accent); }
table { border-collapse: collapse; margin-top: 8px; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
footer { margin-top: 48px; color: var(--muted); font-size: 13px; }
@media print { section { break-inside: avoid; } details { display: none; } }
"""


def _html(ctx: _Context, headline: dict[str, float | int | None], charts: list[_Chart], svgs: dict[str, str]) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = "\n".join(_section(chart, svgs[chart.name]) for chart in charts)
    nav = "".join(f'<a href="#{chart.name}">{html.escape(chart.title.split(":")[0])}</a>' for chart in charts)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Loyalty report, as of {ctx.as_of.isoformat()}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<header>
<h1>Loyalty report</h1>
<p>As of {html.escape(ctx.as_of_text)} · amounts in {html.escape(ctx.currency)} · from the marts of the last run</p>
{_kpis(ctx, headline)}
<nav>{nav}</nav>
</header>
{sections}
<footer>Generated {generated}. Every chart is drawn from the marts named in its
caption; open "Data" under a chart for the exact rows. This page fetches nothing from the network.</footer>
</main>
</body>
</html>
"""


def _kpis(ctx: _Context, n: dict[str, float | int | None]) -> str:
    def fmt_int(value: float | int | None) -> str:
        return "–" if value is None else f"{int(value):,}"

    def fmt_money(value: float | int | None) -> str:
        return "–" if value is None else f"{value:,.0f} {ctx.currency}"

    def fmt_pct(value: float | int | None) -> str:
        return "–" if value is None else f"{value:.1%}"

    cards = [
        (
            "Customers",
            fmt_int(n["customers"]),
            "–" if n["scored_customers"] is None else f"{n['scored_customers']:,} with an RFM score",
        ),
        ("Delivered orders", fmt_int(n["delivered_orders"]), "placed up to the as-of date"),
        ("Revenue", fmt_money(n["revenue"]), "of the delivered orders, net"),
        (
            "Outstanding liability",
            fmt_money(n["liability"]),
            "–" if n["outstanding_points"] is None else f"{n['outstanding_points']:,} points members can redeem",
        ),
        (
            "Redemption rate",
            fmt_pct(n["redemption_rate"]),
            "redeemed ÷ earned, all months" + ("" if n["breakage"] is None else f"; breakage {n['breakage']:.1%}"),
        ),
    ]
    items = "".join(
        f'<div class="kpi"><div class="label">{html.escape(label)}</div><div class="value">{html.escape(value)}</div>'
        f'<div class="note">{html.escape(note)}</div></div>'
        for label, value, note in cards
    )
    return f'<div class="kpis">{items}</div>'


def _section(chart: _Chart, svg: str) -> str:
    image = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
    rows = chart.data.write_json() if not chart.data.is_empty() else "[]"
    rows = rows.replace("</", "<\\/")  # JSON inside <script>: never close the element early
    return f"""<section id="{chart.name}">
<h2>{html.escape(chart.title)}</h2>
<figure>
<img src="{image}" alt="{html.escape(chart.title)}">
<figcaption>{html.escape(chart.caption)}</figcaption>
</figure>
{_table(chart.data)}
<script type="application/json" class="chart-data" data-chart="{chart.name}">{rows}</script>
</section>"""


def _table(frame: pl.DataFrame) -> str:
    """The chart's rows as a small table under a "Data" toggle. The frames are aggregates of at most a few dozen
    rows (months × sources at most), formatted for reading, not a data path."""
    if frame.is_empty():
        return ""
    head = "".join(f"<th>{html.escape(column)}</th>" for column in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(column, value))}</td>" for column, value in row.items()) + "</tr>"
        for row in frame.iter_rows(named=True)
    )
    return f"<details><summary>Data ({frame.height} rows)</summary><table><tr>{head}</tr>{body}</table></details>"


def _cell(column: str, value: object) -> str:
    if value is None:
        return ""
    if column in PERCENT_COLUMNS and isinstance(value, float):
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
