"""One in-memory DuckDB per process for column-wise work on frames (JSON extraction, hashing).

Opening a DuckDB connection costs tens of milliseconds; a cursor on a shared one costs nothing.
"""

from __future__ import annotations

import threading

import duckdb

_lock = threading.Lock()
_base: duckdb.DuckDBPyConnection | None = None


def scratch() -> duckdb.DuckDBPyConnection:
    """A fresh cursor (its own session) on the shared in-memory database, in UTC."""
    global _base
    with _lock:
        if _base is None:
            _base = duckdb.connect()
        cursor = _base.cursor()
    cursor.execute("set TimeZone = 'UTC'")
    cursor.execute("set enable_progress_bar = false")  # no bar on a terminal from long column work
    return cursor
