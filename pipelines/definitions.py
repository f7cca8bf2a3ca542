"""The Dagster code location: one Definitions object, assembled from defs/."""

import dagster as dg

from pipelines.defs import dbt, ingest, ledger, lifetime_value, report, schedules
from pipelines.defs.resources import LoyaltySettings

defs = dg.Definitions(
    assets=[*ingest.assets, *ledger.assets, *lifetime_value.assets, *dbt.assets, *report.assets],
    asset_checks=[*ingest.asset_checks, *ledger.asset_checks],
    jobs=[schedules.daily_job],
    schedules=schedules.schedules,
    sensors=schedules.sensors,
    resources={"settings": LoyaltySettings(), **dbt.resources},
)
