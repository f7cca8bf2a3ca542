"""Daily contact files: every RFM segment in every format, one folder per as-of date (issue #5)."""

import dagster as dg

from pipelines import exports, warehouse
from pipelines.defs.ingest import CUSTOMERS
from pipelines.defs.ledger import CUSTOMER_POINTS
from pipelines.defs.lifetime_value import CLV_CUSTOMERS
from pipelines.defs.resources import LoyaltySettings

SEGMENT_FILES = dg.AssetKey(["exports", "segment_files"])
CUSTOMER_RFM = dg.AssetKey(["marts", "customer_rfm"])
SEGMENT_MAP = dg.AssetKey(["staging", "rfm_segments"])


@dg.asset(
    key=SEGMENT_FILES,
    deps=[CUSTOMER_RFM, SEGMENT_MAP, CUSTOMERS, CUSTOMER_POINTS, CLV_CUSTOMERS],
    group_name="exports",
    kinds={"python", "csv"},
)
def segment_files(context: dg.AssetExecutionContext, settings: LoyaltySettings) -> dg.MaterializeResult:
    """Contact files for Brevo, eSputnik, Klaviyo and plain CSV: <exports_dir>/<as-of>/<format>/<segment>.csv."""
    resolved = settings.resolved()
    folder = resolved.exports_dir / resolved.as_of.isoformat()
    with warehouse.connect(resolved.warehouse, read_only=True) as con:
        written = exports.export_all_segments(con, folder)
    context.log.info(f"{len(written.files)} files, {sum(written.contacts.values())} contacts per format in {folder}")
    return dg.MaterializeResult(
        metadata={
            "folder": dg.MetadataValue.path(str(folder)),
            "files": len(written.files),
            "contacts_by_segment": dg.MetadataValue.json(written.contacts),
            "skipped_without_contact": dg.MetadataValue.json(written.skipped_without_contact),
        }
    )


assets = [segment_files]
