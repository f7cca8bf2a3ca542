"""The Dagster code location: one Definitions object, assembled from defs/."""

import dagster as dg

from pipelines.defs import dbt, exports, ingest, ledger, lifetime_value, publish, report, schedules
from pipelines.defs.resources import LoyaltySettings

# Everything a run builds; the published warehouse comes last, downstream of all of it.
assets = [
    *ingest.assets,
    *ledger.assets,
    *lifetime_value.assets,
    *dbt.assets,
    *exports.assets,
    *report.assets,
    *publish.assets,
]

defs = dg.Definitions(
    assets=[*assets, publish.published_warehouse(after=assets)],
    asset_checks=[*ingest.asset_checks, *ledger.asset_checks],
    jobs=[schedules.daily_job],
    schedules=schedules.schedules,
    sensors=schedules.sensors,
    resources={"settings": LoyaltySettings(), **dbt.resources},
)
