"""What `loyalty run` shows while it works: one line per step on stderr.

On a terminal, the running step is a status line rewritten in place (`[ 4/15] ledger/points_ledger … 12.3s`, with
the step's latest message), and each finished step stays on screen with its time. Anywhere else (a cron mail, a CI
log, a pipe) every change is one plain, timestamped line:

    2026-11-23T19:30:01Z step ingest/raw_orders started
    2026-11-23T19:30:13Z step ingest/raw_orders finished in 12.3s

This module knows nothing of Dagster: pipelines.orchestration feeds it the run's step events.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TextIO

_CLEAR_LINE = "\r\x1b[K"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(text: str, limit: int = 300) -> str:
    """Messages (errors especially) as one line of at most `limit` characters."""
    flat = " ".join(_ANSI.sub("", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Progress:
    """Step progress of one run. Thread-safe: a ticker thread redraws the live line while a step runs."""

    def __init__(
        self,
        stream: TextIO,
        total: int,
        labels: Mapping[str, str] | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        width: int | None = None,
    ):
        self.stream = stream
        self.total = total
        self.labels = dict(labels or {})
        self.live = stream.isatty() if live is None else live
        self.clock, self.now = clock, now
        self.width = width
        self._numbers: dict[str, int] = {}
        self._started_at: dict[str, float] = {}
        self._finished: set[str] = set()
        self._running: str | None = None
        self._note = ""
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # --- events -----------------------------------------------------------------------------------------------

    def started(self, step: str) -> None:
        with self._lock:
            self._numbers.setdefault(step, len(self._numbers) + 1)
            self._started_at[step] = self.clock()
            self._running, self._note = step, ""
            if self.live:
                self._draw_status()
            else:
                self._line(f"step {self.label(step)} started")

    def succeeded(self, step: str) -> None:
        with self._lock:
            self._done(step, f"finished in {self._elapsed(step):.1f}s", f"{self._elapsed(step):.1f}s")

    def failed(self, step: str, error: str | None = None) -> None:
        with self._lock:
            why = f": {one_line(error)}" if error else ""
            text = f"failed after {self._elapsed(step):.1f}s{why}"
            self._done(step, text, f"FAILED after {self._elapsed(step):.1f}s{why}")

    def retrying(self, step: str, error: str | None = None) -> None:
        with self._lock:
            why = f": {one_line(error)}" if error else ""
            self._message(step, f"failed after {self._elapsed(step):.1f}s, will retry{why}")

    def skipped(self, step: str) -> None:
        with self._lock:
            self._finished.add(step)
            self._message(step, "skipped")

    def note(self, step: str | None, message: str, level: int = logging.INFO) -> None:
        """A message from inside a step: warnings and errors are kept; on a terminal, others show in the live line."""
        with self._lock:
            step = step or self._running
            if step is not None and step not in self._numbers:
                return  # Dagster on a step it will not run ("Dependencies ... failed"): finish() lists those
            if level >= logging.WARNING:
                kind = "error" if level >= logging.ERROR else "warning"
                self._message(step, f"{kind}: {one_line(message)}")
            elif self.live and step is not None and step == self._running:
                self._note = one_line(message, limit=200)
                self._draw_status()

    def finish(self) -> None:
        """Stop redrawing; name the steps that never ran (after a failed step or blocking check, or an interrupt)."""
        self.stop_ticker()
        with self._lock:
            if self.live and self._running is not None:
                self.stream.write(_CLEAR_LINE)
            self._running = None
            not_run = [s for s in self.labels if s not in self._numbers and s not in self._finished]
            if not_run:
                self._line("not run: " + ", ".join(self.label(s) for s in not_run))
            self.stream.flush()

    # --- live line ----------------------------------------------------------------------------------------------

    def start_ticker(self, interval: float = 0.5) -> None:
        """On a terminal, redraw the running step's time every `interval` seconds."""
        if not self.live or self._ticker is not None:
            return
        self._ticker = threading.Thread(target=self._tick, args=(interval,), name="loyalty-progress", daemon=True)
        self._ticker.start()

    def stop_ticker(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
            self._ticker = None

    def refresh(self) -> None:
        """Redraw the running step's line with its time so far (on a terminal)."""
        with self._lock:
            if self.live and self._running is not None:
                self._draw_status()

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.refresh()

    # --- rendering ----------------------------------------------------------------------------------------------

    def label(self, step: str | None) -> str:
        return self.labels.get(step, step) if step else "run"

    def _counter(self, step: str) -> str:
        digits = len(str(max(self.total, 1)))
        return f"[{self._numbers.get(step, 0):>{digits}}/{self.total}]"

    def _elapsed(self, step: str) -> float:
        started = self._started_at.get(step)
        return 0.0 if started is None else self.clock() - started

    def _fit(self, text: str) -> str:
        width = self.width or shutil.get_terminal_size((100, 24)).columns
        return text if len(text) < width else text[: max(width - 2, 10)] + "…"

    def _draw_status(self) -> None:
        step = self._running
        if step is None:
            return
        text = f"{self._counter(step)} {self.label(step)} … {self._elapsed(step):.1f}s"
        if self._note:
            text += f"  {self._note}"
        self.stream.write(_CLEAR_LINE + self._fit(text))
        self.stream.flush()

    def _done(self, step: str, plain: str, live: str) -> None:
        self._finished.add(step)
        if self.live:
            self.stream.write(f"{_CLEAR_LINE}{self._counter(step)} {self.label(step)}  {live}\n")
            self.stream.flush()
        else:
            self._line(f"step {self.label(step)} {plain}")
        if self._running == step:
            self._running, self._note = None, ""

    def _message(self, step: str | None, text: str) -> None:
        """A line that stays: above the live status line on a terminal, timestamped elsewhere."""
        if self.live:
            self.stream.write(f"{_CLEAR_LINE}        {self.label(step)}: {text}\n")
            self._draw_status()
            self.stream.flush()
        else:
            self._line(f"step {self.label(step)} {text}")

    def _line(self, text: str) -> None:
        if self.live:
            self.stream.write(f"{_CLEAR_LINE}{text}\n")
        else:
            self.stream.write(f"{self.now().strftime('%Y-%m-%dT%H:%M:%SZ')} {text}\n")
        self.stream.flush()
