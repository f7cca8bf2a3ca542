"""The loyalty report (issue #5): the marts as one offline HTML page and a PNG per chart, after every run."""

import dagster as dg

from pipelines import report, warehouse
from pipelines.defs.resources import LoyaltySettings

LOYALTY_REPORT = dg.AssetKey(["reports", "loyalty_report"])
# The marts the report reads, and the segment map (a dbt seed) that names the cells of the RFM grid.
READS = [*(dg.AssetKey(["marts", mart]) for mart in report.MARTS_READ), dg.AssetKey(["staging", "rfm_segments"])]


@dg.asset(key=LOYALTY_REPORT, deps=READS, group_name="reports", kinds={"html", "altair"})
def loyalty_report(context: dg.AssetExecutionContext, settings: LoyaltySettings) -> dg.MaterializeResult:
    """Offline HTML page with the headline numbers and six charts, and a PNG per chart: <reports_dir>/<as-of>/."""
    resolved = settings.resolved()
    with warehouse.connect(resolved.warehouse, read_only=True) as con:
        # The report describes the marts as they were built: file it under their as-of date, which is the run's own
        # in a scheduled run and may be older when the report alone is materialized on a later day.
        as_of = report.warehouse_as_of(con) or resolved.as_of
        if as_of != resolved.as_of:
            context.log.warning(f"the marts are as of {as_of}, not {resolved.as_of}: the report is filed under {as_of}")
        result = report.build_report(con, resolved.reports_dir / as_of.isoformat(), as_of, rules=settings.load_rules())
    empty = [chart.name for chart in result.charts if chart.empty]
    if empty:
        context.log.warning(f"charts without data: {', '.join(empty)}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(result.html)),
            "charts": dg.MetadataValue.json({chart.name: str(chart.png) for chart in result.charts}),
            "charts_without_data": dg.MetadataValue.json(empty),
            "as_of": as_of.isoformat(),
            "headline": dg.MetadataValue.json(result.headline),
        }
    )


assets = [loyalty_report]
