"""Lifetime value (SPEC §6.1): BG/NBD + Gamma-Gamma fitted in Python on the delivered orders."""

import dagster as dg

from pipelines import runs
from pipelines.defs.ingest import ORDERS, TRANSIENT_RETRY
from pipelines.defs.resources import LoyaltySettings

CLV_CUSTOMERS = dg.AssetKey(["core", "clv_customers"])
CLV_PARAMS = dg.AssetKey(["core", "clv_model_params"])


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            CLV_CUSTOMERS,
            deps=[ORDERS],
            kinds={"python", "scipy", "duckdb"},
            description="One row per customer: purchase summary and 52-week predictions.",
        ),
        dg.AssetSpec(
            CLV_PARAMS,
            deps=[ORDERS],
            kinds={"python", "scipy", "duckdb"},
            description="One row per model parameter of the fitted BG/NBD and Gamma-Gamma models.",
        ),
    ],
    group_name="lifetime_value",
    retry_policy=TRANSIENT_RETRY,
)
def lifetime_value(context: dg.AssetExecutionContext, settings: LoyaltySettings):
    """BG/NBD and Gamma-Gamma fitted by maximum likelihood; predictions per customer."""
    report = runs.fit_lifetime_value(settings.resolved(), settings.load_rules())
    for message in report.warnings:
        context.log.warning(message)
    yield dg.MaterializeResult(
        asset_key=CLV_CUSTOMERS,
        metadata={
            "customers": report.customers,
            "with_prediction": report.predicted,
            "warnings": dg.MetadataValue.json(report.warnings),
        },
    )
    yield dg.MaterializeResult(
        asset_key=CLV_PARAMS, metadata={k: float(v) for k, v in report.params.items() if v is not None}
    )


assets = [lifetime_value]
