"""One in-memory DuckDB per process for column-wise work on frames (JSON extraction, hashing).

Opening a DuckDB connection costs tens of milliseconds; a cursor on a shared one costs nothing.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading

import duckdb
import polars as pl

from pipelines.settings import duckdb_memory_limit

_lock = threading.Lock()
_base: duckdb.DuckDBPyConnection | None = None


def scratch() -> duckdb.DuckDBPyConnection:
    """A fresh cursor (its own session) on the shared in-memory database, in UTC."""
    global _base
    with _lock:
        if _base is None:
            _base = duckdb.connect()
            # Column work on one batch at a time needs little; past the limit DuckDB spills to a private folder.
            _base.execute(f"set memory_limit = '{duckdb_memory_limit()}'")
            spill = tempfile.mkdtemp(prefix="loyalty-duckdb-")
            atexit.register(shutil.rmtree, spill, ignore_errors=True)
            _base.execute(f"set temp_directory = '{spill}'")
        cursor = _base.cursor()
    cursor.execute("set TimeZone = 'UTC'")
    cursor.execute("set enable_progress_bar = false")  # no bar on a terminal from long column work
    return cursor


def in_chunks(frame: pl.DataFrame, rows: int) -> pl.DataFrame:
    """`frame` as chunks of at most `rows` rows, the same rows in the same order. DuckDB scans a frame's Arrow
    record batches one to a thread at a time: a frame of one chunk is read (parsed, inserted) by one thread."""
    if frame.height <= rows:
        return frame
    return pl.concat([frame.slice(start, rows) for start in range(0, frame.height, rows)], rechunk=False)
