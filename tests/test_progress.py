"""`loyalty run` progress: timestamped lines when stderr is not a terminal, a live status line when it is."""

from __future__ import annotations

import io
import logging
import re
import time
from datetime import UTC, datetime

from pipelines.definitions import defs
from pipelines.orchestration import PROGRESS_LOGGER, _dbt_progress, _LineTap, step_labels
from pipelines.progress import Progress

STAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(raw: str) -> list[str]:
    """What a terminal shows: a carriage return goes back to the start of the line, ESC[K clears the rest of it."""
    lines, current = [], ""
    for part in re.split(r"(\r|\n|\x1b\[K)", raw):
        if part == "\r":
            current = ""
        elif part == "\n":
            lines.append(current)
            current = ""
        elif part != "\x1b[K":
            current += part
    return [*lines, current] if current else lines


def test_plain_lines_for_every_step_when_stderr_is_not_a_terminal(seed_run):
    assert seed_run.exit_code == 0, seed_run.stderr
    lines = seed_run.stderr.splitlines()
    labels = step_labels(defs)
    assert len(labels) == len(defs.resolve_job_def("loyalty_daily").graph.nodes)
    for label in labels.values():
        assert any(re.fullmatch(rf"{STAMP} step {re.escape(label)} started", line) for line in lines), label
        assert any(re.fullmatch(rf"{STAMP} step {re.escape(label)} finished in \d+\.\ds", line) for line in lines), (
            label
        )
    assert "step ingest/raw_orders started" in seed_run.stderr
    assert "step warehouse/published finished in" in lines[-1]  # it runs last
    assert "\r" not in seed_run.stderr and "\x1b" not in seed_run.stderr
    assert "dbt" not in "".join(line for line in lines if "loyalty_dbt_models" not in line and "dbt_docs" not in line)


def test_dagster_dev_keeps_its_console_logger():
    job = defs.resolve_job_def("loyalty_daily")
    assert PROGRESS_LOGGER not in job.loggers  # added by `loyalty run` only


def test_plain_lines_name_failures_retries_warnings_and_steps_not_run():
    out, clock = io.StringIO(), Clock()
    now = lambda: datetime(2026, 11, 23, 19, 30, 1, tzinfo=UTC)  # noqa: E731
    labels = {
        "raw_orders": "ingest/raw_orders",
        "points_ledger": "ledger/points_ledger",
        "published": "warehouse/published",
    }
    progress = Progress(out, total=3, labels=labels, clock=clock, now=now)
    assert not progress.live
    progress.started("raw_orders")
    progress.note("raw_orders", "file 120/637")  # progress chatter: not a line of its own
    progress.note("raw_orders", "1 unreadable file", logging.WARNING)
    clock.now += 12.34
    progress.succeeded("raw_orders")
    progress.started("points_ledger")
    clock.now += 1
    progress.retrying("points_ledger", "database is locked")
    progress.started("points_ledger")
    clock.now += 3.1
    progress.failed("points_ledger", "ValueError: boom\n  on two lines")
    progress.note("published", "Dependencies for step published failed. Not executing.", logging.ERROR)  # not started
    progress.finish()
    assert out.getvalue().splitlines() == [
        "2026-11-23T19:30:01Z step ingest/raw_orders started",
        "2026-11-23T19:30:01Z step ingest/raw_orders warning: 1 unreadable file",
        "2026-11-23T19:30:01Z step ingest/raw_orders finished in 12.3s",
        "2026-11-23T19:30:01Z step ledger/points_ledger started",
        "2026-11-23T19:30:01Z step ledger/points_ledger failed after 1.0s, will retry: database is locked",
        "2026-11-23T19:30:01Z step ledger/points_ledger started",
        "2026-11-23T19:30:01Z step ledger/points_ledger failed after 3.1s: ValueError: boom on two lines",
        "2026-11-23T19:30:01Z not run: warehouse/published",
    ]


def test_terminal_status_line_is_rewritten_in_place_and_finished_steps_stay():
    term, clock = Terminal(), Clock()
    labels = {"raw_orders": "ingest/raw_orders", "points_ledger": "ledger/points_ledger"}
    progress = Progress(term, total=12, labels=labels, clock=clock, width=80)
    assert progress.live
    progress.started("raw_orders")
    assert screen(term.getvalue()) == ["[ 1/12] ingest/raw_orders … 0.0s"]
    clock.now += 4.25
    progress.note("raw_orders", "file 120/637")
    assert screen(term.getvalue()) == ["[ 1/12] ingest/raw_orders … 4.2s  file 120/637"]
    clock.now += 8
    progress.refresh()
    assert screen(term.getvalue()) == ["[ 1/12] ingest/raw_orders … 12.2s  file 120/637"]
    progress.note("raw_orders", "1 unreadable file", logging.WARNING)
    assert screen(term.getvalue()) == [
        "        ingest/raw_orders: warning: 1 unreadable file",
        "[ 1/12] ingest/raw_orders … 12.2s  file 120/637",
    ]
    progress.succeeded("raw_orders")
    progress.started("points_ledger")
    progress.note(None, "x" * 200)  # no step given: the running one; cut to the terminal's width
    shown = screen(term.getvalue())
    assert shown[:2] == ["        ingest/raw_orders: warning: 1 unreadable file", "[ 1/12] ingest/raw_orders  12.2s"]
    assert shown[2].startswith("[ 2/12] ledger/points_ledger … 0.0s  xxx") and len(shown[2]) < 80
    clock.now += 0.5
    progress.failed("points_ledger", "boom")
    progress.finish()
    assert screen(term.getvalue())[2:] == [
        "[ 2/12] ledger/points_ledger  FAILED after 0.5s: boom",
    ]


def test_ticker_redraws_the_running_step():
    term = Terminal()
    progress = Progress(term, total=1, labels={"a": "a"}, width=80)
    progress.started("a")
    progress.start_ticker(interval=0.01)
    deadline = time.monotonic() + 5
    while term.getvalue().count("\r") < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    progress.finish()
    assert term.getvalue().count("\r") >= 4
    assert progress._ticker is None


def test_dbt_output_feeds_the_live_line_and_still_reaches_the_log():
    log, term = io.StringIO(), Terminal()
    progress = Progress(term, total=1, labels={"dbt": "loyalty_dbt_models"}, width=120)
    progress.started("dbt")
    tap = _LineTap(log, _dbt_progress(progress))
    tap.write("Running with dbt=1.11.16\n57 of 149 START sql table model marts.customer_rfm ")
    tap.write(".......... [RUN]\n")
    tap.write("57 of 149 OK created sql table model marts.customer_rfm ... [\x1b[32mOK\x1b[0m in 0.21s]\n")
    assert log.getvalue().startswith("Running with dbt=1.11.16\n57 of 149 START")
    assert screen(term.getvalue())[-1].endswith("57 of 149 OK created sql table model marts.customer_rfm")
