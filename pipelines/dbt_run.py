"""What a dbt command of a pipeline run gets: the rules as dbt vars, and its environment (warehouse, as-of date,
DuckDB's vacuum setting). Plain code, no Dagster: the dbt asset, the docs asset and `loyalty bench` use it, and
the bench's dbt step then needs no parsed manifest."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from pipelines import warehouse as wh
from pipelines.rules import Rules


def dbt_vars(rules: Rules) -> dict[str, Any]:
    """The rules values the marts need, as dbt vars (the as-of date is in `dbt_env`)."""
    return {
        "rfm_window_days": rules.rfm.window_days,
        "rfm_frequency_bins": list(rules.rfm.frequency_bins),
        "redeem_points_per_unit": float(rules.redeem.points_per_unit),
        "reporting_currency": rules.reporting_currency,
        "tiers": [tier.name for tier in rules.tiers],
    }


def dbt_env(warehouse: Path, as_of: date) -> dict[str, str]:
    """The environment a dbt command of a run needs: the warehouse (profiles.yml) and the as-of date
    (macro `as_of_date`). The date is not a var: dbt parses the whole project again when a var changes (about
    3 s); the macro reads the environment variable only when a model is compiled, so no file depends on it
    at parse time and a daily run keeps the parse of the day before as it is. DuckDB's vacuum setting follows
    the warehouse's deleted rows (`_vacuum_tasks`); a change of it changes the profile, and dbt then parses
    again, on the few days it changes."""
    return {
        "LOYALTY_WAREHOUSE": str(warehouse),
        "LOYALTY_AS_OF": as_of.isoformat(),
        "LOYALTY_DUCKDB_VACUUM_TASKS": str(_vacuum_tasks(warehouse)),
    }


def _vacuum_tasks(path: Path) -> int:
    """dbt's `max_vacuum_tasks`, as the pipeline's own connections choose it (`warehouse.vacuum_tasks`)."""
    if not Path(path).exists():
        return wh.DUCKDB_VACUUM_TASKS
    try:
        with wh.connect(path, read_only=True) as con:
            return wh.vacuum_tasks(con)
    except duckdb.Error:  # cannot be read now (another process writes it): DuckDB's default, as before
        return wh.DUCKDB_VACUUM_TASKS
