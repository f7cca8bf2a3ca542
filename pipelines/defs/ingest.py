"""Assets of the ingest and canonical layers (SPEC §2–4), with the checks that guard them."""

import dagster as dg

from pipelines import runs
from pipelines.defs.resources import LoyaltySettings

EVENTS = dg.AssetKey(["core", "order_events"])
QUARANTINE = dg.AssetKey(["core", "quarantine"])
INGEST_FILES = dg.AssetKey(["core", "ingest_files"])
ORDERS = dg.AssetKey(["core", "orders"])
ORDER_ITEMS = dg.AssetKey(["core", "order_items"])
CUSTOMERS = dg.AssetKey(["core", "customers"])

# A step that fails for a passing reason (the warehouse file briefly locked by another process) is retried.
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=2, delay=5)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(EVENTS, description="Every accepted raw record, in processing order.", kinds={"python", "duckdb"}),
        dg.AssetSpec(
            QUARANTINE, description="Every rejected record with its reason and raw text.", kinds={"python", "duckdb"}
        ),
        dg.AssetSpec(
            INGEST_FILES,
            description="One row per raw file seen, with its conservation counts.",
            kinds={"python", "duckdb"},
        ),
    ],
    group_name="ingest",
    retry_policy=TRANSIENT_RETRY,
)
def raw_orders(context: dg.AssetExecutionContext, settings: LoyaltySettings):
    """Raw order exports parsed and validated: accepted records, quarantine, file ledger."""
    resolved = settings.resolved()
    report = runs.ingest(resolved, settings.load_rules(), run_id=context.run.run_id)
    for message in report.files_unreadable + report.warnings:
        context.log.warning(message)
    context.log.info(
        f"{report.files_ingested} new file(s), {report.files_skipped} already ingested; "
        f"{report.records_read} records read, {report.records_accepted} accepted, "
        f"{report.records_quarantined} quarantined {report.quarantined_by_reason}"
    )
    yield dg.MaterializeResult(
        asset_key=EVENTS,
        metadata={
            "files_ingested": report.files_ingested,
            "records_accepted": report.records_accepted,
            "readmitted_updates": report.readmitted,
        },
    )
    yield dg.MaterializeResult(
        asset_key=QUARANTINE,
        metadata={
            "records_quarantined": report.records_quarantined,
            "by_reason": dg.MetadataValue.json(report.quarantined_by_reason),
        },
    )
    yield dg.MaterializeResult(
        asset_key=INGEST_FILES,
        metadata={
            "files_seen": report.files_seen,
            "files_unreadable": len(report.files_unreadable),
            "records_read": report.records_read,
        },
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ORDERS, deps=[EVENTS], description="One row per order, its latest merged state.", kinds={"polars", "duckdb"}
        ),
        dg.AssetSpec(ORDER_ITEMS, deps=[EVENTS], description="One row per order line.", kinds={"polars", "duckdb"}),
        dg.AssetSpec(
            CUSTOMERS,
            deps=[EVENTS],
            description="One row per resolved customer, with contact data.",
            kinds={"polars", "duckdb"},
        ),
    ],
    group_name="canonical",
    retry_policy=TRANSIENT_RETRY,
)
def canonical_orders(context: dg.AssetExecutionContext, settings: LoyaltySettings):
    """Orders merged from their records, their lines, and customers resolved by identity."""
    report = runs.rebuild_canonical(settings.resolved(), settings.load_rules())
    context.log.info(
        f"{report.orders} orders {report.orders_by_status}, {report.customers} customers; "
        f"{report.orders_merged} orders merged ({report.mode})"
    )
    yield dg.MaterializeResult(
        asset_key=ORDERS,
        metadata={
            "orders": report.orders,
            "by_status": dg.MetadataValue.json(report.orders_by_status),
            "orders_merged": report.orders_merged,
            "rebuild": report.mode,
        },
    )
    yield dg.MaterializeResult(asset_key=ORDER_ITEMS, metadata={"order_items": report.order_items})
    yield dg.MaterializeResult(asset_key=CUSTOMERS, metadata={"customers": report.customers})


@dg.asset_check(asset=INGEST_FILES, blocking=True, description="Records read = accepted + quarantined, per file.")
def conservation(settings: LoyaltySettings) -> dg.AssetCheckResult:
    bad = settings.scalar(
        """
        select count(*) from core.ingest_files f
        where f.records_read <> f.records_accepted + f.records_quarantined
           or f.records_accepted <> (select count(*) from core.order_events e
                                     where e.source_file = f.path and e.file_sha256 = f.sha256)
           or f.records_quarantined <> (select count(*) from core.quarantine q
                                        where q.source_file = f.path and q.file_sha256 = f.sha256)
        """,
    )
    return dg.AssetCheckResult(passed=bad == 0, metadata={"files_not_conserved": bad})


@dg.asset_check(asset=ORDERS, blocking=True, description="order_id is unique in core.orders.")
def order_id_unique(settings: LoyaltySettings) -> dg.AssetCheckResult:
    duplicates = settings.scalar("select count(*) - count(distinct order_id) from core.orders")
    return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_order_ids": duplicates})


@dg.asset_check(asset=QUARANTINE, blocking=True, description="No quarantined record is missing its raw text.")
def quarantine_keeps_raw_text(settings: LoyaltySettings) -> dg.AssetCheckResult:
    missing = settings.scalar("select count(*) from core.quarantine where raw_record is null or raw_record = ''")
    return dg.AssetCheckResult(passed=missing == 0, metadata={"records_without_raw_text": missing})


assets = [raw_orders, canonical_orders]
asset_checks = [conservation, order_id_unique, quarantine_keeps_raw_text]
