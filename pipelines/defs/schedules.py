"""When the pipeline runs by itself: a daily schedule and a sensor for newly landed raw files."""

from datetime import timedelta

import dagster as dg

from pipelines.reading import raw_signature
from pipelines.settings import Settings

# Everything, assets and their checks: the job `loyalty run` executes in-process and the schedule launches.
daily_job = dg.define_asset_job(
    name="loyalty_daily",
    selection=dg.AssetSelection.all(),
    description="Ingest new raw files, rebuild the canonical tables, the ledger and the marts.",
    tags={"dagster/max_retries": 2},  # a run that fails for a transient reason is retried (run retries)
    executor_def=dg.in_process_executor,  # one step at a time: DuckDB has one writer
)


def _as_of_config(as_of: str) -> dict:
    return {"resources": {"settings": {"config": {"as_of": as_of}}}}


@dg.schedule(job=daily_job, cron_schedule="0 2 * * *", execution_timezone="UTC")
def daily_at_two(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Every day at 02:00 UTC, materialize everything as of the previous day."""
    as_of = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"daily-{as_of}", run_config=_as_of_config(as_of), tags={"as_of": as_of})


@dg.sensor(job=daily_job, minimum_interval_seconds=60)
def new_raw_files(context: dg.SensorEvaluationContext):
    """Start a run when files land, grow or change under the raw directory."""
    raw_dir = Settings.resolve().raw_dir
    if not raw_dir.is_dir():
        return dg.SkipReason(f"raw directory {raw_dir} does not exist")
    signature = raw_signature(raw_dir)
    if signature == context.cursor:
        return dg.SkipReason("no new raw files")
    context.update_cursor(signature)
    if signature.startswith("0:"):
        return dg.SkipReason("the raw directory holds no export yet")
    return dg.RunRequest(run_key=f"raw-{signature}")


schedules = [daily_at_two]
sensors = [new_raw_files]
