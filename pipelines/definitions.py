"""The Dagster code location: one Definitions object, assembled from defs/."""

from __future__ import annotations

import dagster as dg

from pipelines.defs import ingest, lifetime_value, schedules
from pipelines.defs.resources import LoyaltySettings

defs = dg.Definitions(
    assets=[*ingest.assets, *lifetime_value.assets],
    asset_checks=[*ingest.asset_checks],
    jobs=[schedules.daily_job],
    schedules=schedules.schedules,
    sensors=schedules.sensors,
    resources={"settings": LoyaltySettings()},
)
