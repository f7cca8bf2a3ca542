"""Running the Dagster definitions in-process: what `loyalty run` does, the same assets the schedule runs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg


@dataclass
class RunOutcome:
    run_id: str
    success: bool
    failed_checks: list[str] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_pipeline(log_path: Path | None = None, log_level: str = "CRITICAL") -> RunOutcome:
    """Execute the daily job in-process. What the steps print (dbt's progress) goes to `log_path` when given."""
    import logging

    from pipelines.definitions import defs

    logging.getLogger("dagster").setLevel(logging.WARNING)  # the summary says what happened; no step chatter

    job = defs.resolve_job_def("loyalty_daily")
    with contextlib.ExitStack() as stack:
        instance = stack.enter_context(dg.DagsterInstance.ephemeral())
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(log_path.open("w"))))
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
