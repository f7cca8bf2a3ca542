"""Running the Dagster definitions in-process: what `loyalty run` does, the same assets the schedule runs.

Progress: the job runs with one extra Dagster logger (`loyalty_progress`), added here only, so `dagster dev` and the
schedule keep their own console logger. Dagster hands every logger the run's events (STEP_START, STEP_SUCCESS,
STEP_FAILURE, ...) as log records carrying `dagster_meta`; the logger turns them into pipelines.progress calls.
What the steps print (dbt's output, dagster-dbt's messages) goes to the run's log file instead of the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import dagster as dg

from pipelines.progress import Progress

PROGRESS_LOGGER = "loyalty_progress"


@dataclass
class RunOutcome:
    run_id: str
    success: bool
    failed_checks: list[str] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    materialized: set[str] = field(default_factory=set)  # asset keys, e.g. "warehouse/published"


def run_pipeline(log_path: Path | None = None, progress_stream: TextIO | None = None) -> RunOutcome:
    """Execute the daily job in-process, showing step progress on `progress_stream` (default: stderr).

    What the steps print (dbt's progress) goes to `log_path` when given.
    """
    from pipelines.definitions import defs

    job = defs.resolve_job_def("loyalty_daily")
    labels = step_labels(defs)
    progress = Progress(progress_stream or sys.stderr, total=len(job.graph.nodes), labels=labels)
    job = job.with_logger_defs({**job.loggers, PROGRESS_LOGGER: progress_logger(progress)})
    with contextlib.ExitStack() as stack:
        instance = stack.enter_context(dg.DagsterInstance.ephemeral())
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = stack.enter_context(log_path.open("w"))
            stack.enter_context(contextlib.redirect_stdout(_LineTap(log_file, _dbt_progress(progress))))
            stack.enter_context(_python_logs_to(log_file))
        progress.start_ticker()
        stack.callback(progress.finish)
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            # Only our logger: without any, Dagster would add its console logger and print every event.
            run_config={"loggers": {PROGRESS_LOGGER: {}}},
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
                error = _error_message(event)
                if error is not None:
                    errors.append(f"{event.step_key}: {error}")
        materialized = {
            event.asset_key.to_user_string()
            for event in result.get_asset_materialization_events()
            if event.asset_key is not None
        }
        return RunOutcome(
            run_id=result.run_id,
            success=result.success and not failed_checks,
            failed_checks=failed_checks,
            failed_steps=failed_steps,
            errors=errors,
            materialized=materialized,
        )


def step_labels(defs: dg.Definitions) -> dict[str, str]:
    """A readable name per step (op): its asset key, `<group>/<op>` for a multi-asset, `check <asset>:<name>`."""
    labels: dict[str, str] = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        if not assets_def.is_executable:
            continue
        op_name = assets_def.node_def.name
        keys = list(assets_def.keys)
        if len(keys) == 1:
            labels[op_name] = keys[0].to_user_string()
        elif keys:
            groups = set(assets_def.group_names_by_key.values())
            labels[op_name] = f"{groups.pop()}/{op_name}" if len(groups) == 1 else op_name
        elif assets_def.check_keys:
            check = next(iter(assets_def.check_keys))
            labels[op_name] = f"check {check.asset_key.to_user_string()}:{check.name}"
    return labels


def progress_logger(progress: Progress) -> dg.LoggerDefinition:
    """A Dagster logger that feeds `progress` with the run's step events and the steps' own log messages."""

    @dg.logger(description="Step progress of `loyalty run` (pipelines.progress).")
    def loyalty_progress(_init_context) -> logging.Logger:
        logger = logging.Logger(PROGRESS_LOGGER, level=logging.DEBUG)  # not in the logging tree: nothing propagates
        logger.addHandler(_ProgressHandler(progress))
        return logger

    return loyalty_progress


class _ProgressHandler(logging.Handler):
    def __init__(self, progress: Progress):
        super().__init__(level=logging.DEBUG)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        step = meta.get("step_key")
        event = meta.get("dagster_event")
        if event is None:
            if step:
                self.progress.note(step, _shorter(str(meta.get("orig_message") or record.getMessage())), record.levelno)
            return
        kind = event.event_type
        if kind in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED):
            self.progress.started(step)
        elif kind == dg.DagsterEventType.STEP_SUCCESS:
            self.progress.succeeded(step)
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            self.progress.failed(step, _error_message(event))
        elif kind == dg.DagsterEventType.STEP_UP_FOR_RETRY:
            self.progress.retrying(step, _error_message(event))
        elif kind == dg.DagsterEventType.STEP_SKIPPED:
            self.progress.skipped(step)
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if evaluation is not None and not evaluation.passed:
                name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
                self.progress.note(step, f"check {name} failed", logging.WARNING)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """Progress is a courtesy: a rendering problem must never disturb the run or print a traceback."""


def _error_message(event) -> str | None:
    data = event.event_specific_data
    error = getattr(data, "error", None)
    if error is None:
        return None
    cause = error.cause or error
    return cause.message.strip()


_DBT_COMMAND = re.compile(r"^(Running|Finished) dbt command: `\S*dbt (docs generate|[a-z-]+)")


def _shorter(message: str) -> str:
    """dagster-dbt's "Running dbt command: `/…/dbt build --vars {…}`" as "running dbt build"."""
    match = _DBT_COMMAND.match(message)
    return f"{match.group(1).lower()} dbt {match.group(2)}" if match else message


_DBT_LINE = re.compile(r"(\d+ of \d+ \S+ .*?)\s*(?:\.{3,}.*)?$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _dbt_progress(progress: Progress) -> Callable[[str], None]:
    """dbt's own counter ("57 of 149 START sql table model marts.customer_rfm") as the running step's note."""

    def on_line(line: str) -> None:
        match = _DBT_LINE.search(_ANSI.sub("", line))
        if match:
            progress.note(None, match.group(1))

    return on_line


class _LineTap:
    """A stdout stand-in: writes through to `target`, and hands each complete line to `on_line`."""

    def __init__(self, target: TextIO, on_line: Callable[[str], None]):
        self._target, self._on_line, self._pending = target, on_line, ""

    def write(self, text: str) -> int:
        written = self._target.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._on_line(line)
        return written

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str):
        return getattr(self._target, name)


@contextlib.contextmanager
def _python_logs_to(stream: TextIO):
    """Python log records under `dagster` (dagster-dbt's "Running dbt command ...") go to `stream`, not stderr."""
    dagster_logger = logging.getLogger("dagster")
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    propagate = dagster_logger.propagate
    dagster_logger.addHandler(handler)
    dagster_logger.propagate = False
    try:
        yield
    finally:
        dagster_logger.propagate = propagate
        dagster_logger.removeHandler(handler)
