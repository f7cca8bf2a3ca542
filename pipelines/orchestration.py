"""Running the Dagster definitions in-process: what `loyalty run` does, the same assets the schedule runs."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg


@dataclass
class RunOutcome:
    run_id: str
    success: bool
    failed_checks: list[str] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_pipeline(log_level: str = "CRITICAL") -> RunOutcome:
    import logging

    from pipelines.definitions import defs

    logging.getLogger("dagster").setLevel(logging.WARNING)  # the summary says what happened; no step chatter

    job = defs.resolve_job_def("loyalty_daily")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        failed_checks = [
            f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            for evaluation in result.get_asset_check_evaluations()
            if not evaluation.passed
        ]
        failed_steps, errors = [], []
        for event in result.all_events:
            if event.event_type == dg.DagsterEventType.STEP_FAILURE:
                failed_steps.append(event.step_key or "?")
                error = event.step_failure_data.error if event.step_failure_data else None
                if error is not None:
                    cause = error.cause or error
                    errors.append(f"{event.step_key}: {cause.message.strip()}")
        return RunOutcome(
            run_id=result.run_id,
            success=result.success and not failed_checks,
            failed_checks=failed_checks,
            failed_steps=failed_steps,
            errors=errors,
        )
