"""The DuckDB warehouse: the one place that reads and writes `core` tables.

DuckDB allows one writer per file, so a run holds one connection for its writes. Every write of a run step
happens inside one transaction: a killed or failed step leaves the previous tables as they were.
"""

from __future__ import annotations

import glob
import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from pipelines.duck import in_chunks
from pipelines.schemas import (
    CUSTOMER_COLUMNS,
    EVENT_COLUMNS,
    INGEST_FILE_COLUMNS,
    ORDER_COLUMNS,
    ORDER_ITEM_COLUMNS,
    QUARANTINE_COLUMNS,
    empty_frame,
)
from pipelines.settings import duckdb_memory_limit

CORE_TABLES: dict[str, dict[str, pl.DataType]] = {
    "order_events": EVENT_COLUMNS,
    "quarantine": QUARANTINE_COLUMNS,
    "ingest_files": INGEST_FILE_COLUMNS,
    "orders": ORDER_COLUMNS,
    "order_items": ORDER_ITEM_COLUMNS,
    "customers": CUSTOMER_COLUMNS,
}


# The file format a new warehouse is written in (an existing file keeps its own). DuckDB's default is still
# v1.0.0's; from v1.3.0 strings are compressed by dictionary and FSST together, which writes a 10M-order
# fct_orders in 6.6 s instead of 9.9 s, in a smaller file. v1.4.0: DuckDB's long-term support release, so any
# DuckDB from 1.4 on opens the warehouse and its published copy (the Parquet files are for anything else).
STORAGE_VERSION = "v1.4.0"


@contextmanager
def connect(path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only, config={"storage_compatibility_version": STORAGE_VERSION})
    try:
        # DuckDB takes 80 % of the machine's memory by default; past this limit it spills to disk instead.
        con.execute(f"set memory_limit = '{duckdb_memory_limit()}'")
        con.execute("set TimeZone = 'UTC'")
        con.execute("set enable_progress_bar = false")
        if not read_only:
            con.execute(f"set max_vacuum_tasks = {vacuum_tasks(con)}")
        yield con
    finally:
        con.close()


# DuckDB's checkpoint "vacuums" a table it writes: it merges row groups holding deleted rows into fewer, i.e.
# rewrites them. A daily run deletes and writes again a few percent of the rows of many tables (the orders it
# merged, the ledger of its customers, the scores and tiers whose inputs changed), spread over every row group,
# and with the new rows appended the checkpoint then rewrote much of each such table (1M orders: 1.2 to 2.1 s
# for core.orders instead of 0.2 s). So vacuuming waits: the deleted rows stay as tombstones (skipped by every
# scan) until a table holds VACUUM_DEAD_SHARE of them, and at least a row group's worth (a small table's few
# deleted rows cost nothing, and DuckDB may have no row groups to merge them out of); then the connections
# that write use DuckDB's own vacuum again (its default, DUCKDB_VACUUM_TASKS), whose checkpoints compact the
# tables they write.
VACUUM_DEAD_SHARE = 0.25
ROW_GROUP_ROWS = 122_880  # DuckDB's row group size
DUCKDB_VACUUM_TASKS = 100


def tables_to_compact(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables of the warehouse holding VACUUM_DEAD_SHARE of deleted rows, and a row group's worth."""
    tables = con.execute(
        "select schema_name, table_name, estimated_size from duckdb_tables() "
        "where database_name = current_database() and not temporary and estimated_size >= ?",
        [ROW_GROUP_ROWS],
    ).fetchall()
    found = []
    for schema, table, stored in tables:  # estimated_size counts deleted rows until they are vacuumed
        dead = stored - con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()[0]
        if dead >= max(VACUUM_DEAD_SHARE * stored, ROW_GROUP_ROWS):
            found.append(f"{schema}.{table}")
    return found


def vacuum_tasks(con: duckdb.DuckDBPyConnection) -> int:
    """DuckDB's `max_vacuum_tasks` for a connection that writes: 0 (no vacuum) unless a table is to be
    compacted (`tables_to_compact`), DuckDB's default then."""
    return DUCKDB_VACUUM_TASKS if tables_to_compact(con) else 0


def table_names(con: duckdb.DuckDBPyConnection, schema: str) -> set[str]:
    """The names of the tables (and views) of `schema` in the connection's own database (not in one it
    attached); empty when there is no such schema."""
    rows = con.execute(
        "select table_name from information_schema.tables where table_schema = ? "
        "and table_catalog = current_database()",
        [schema],
    )
    return {row[0] for row in rows.fetchall()}


def ensure_core(con: duckdb.DuckDBPyConnection) -> None:
    """Create schema `core` and any missing table, typed from the canonical column definitions."""
    con.execute("create schema if not exists core")
    existing = table_names(con, "core")
    for table, columns in CORE_TABLES.items():
        if table not in existing:
            create_table(con, f"core.{table}", empty_frame(columns))


def read_table(con: duckdb.DuckDBPyConnection, table: str, where: str = "") -> pl.DataFrame:
    query = f"select * from core.{table}" + (f" where {where}" if where else "")
    return con.sql(query).pl()


# DuckDB's row group. A frame handed to an insert in chunks of this many rows is written by every thread, each
# compressing whole row groups, in the frame's order; in one chunk, by one thread (600,000 order events into a
# new file, six runs each: 5.2–9.6 → 3.2–4.9 s on two cores, the same rows in the same order; chunks of 16,384
# rows did not help).
ROW_GROUP_ROWS = 122_880


def in_row_groups(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` as chunks of `ROW_GROUP_ROWS` rows (the same rows in the same order), for an insert."""
    return in_chunks(frame, ROW_GROUP_ROWS)


def append(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    if frame.height:
        columns = ", ".join(f'"{c}"' for c in CORE_TABLES[table])
        pieces = in_row_groups(frame)  # noqa: F841 (read by DuckDB below)
        con.execute(f"insert into core.{table} ({columns}) select {columns} from pieces")


def create_table(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> None:
    """Create (or replace) table `name` with the columns and rows of `frame`.

    Not `create table ... as select * from frame`: in DuckDB 1.5 a table created that way from an empty frame
    inside a transaction silently loses a large insert (over one row group) that follows in the same
    transaction. A table declared with its columns does not (tests/test_warehouse.py).
    """
    columns = con.execute("describe select * from frame").fetchall()
    con.execute(f"create or replace table {name} (" + ", ".join(f'"{c[0]}" {c[1]}' for c in columns) + ")")
    if frame.height:
        pieces = in_row_groups(frame)  # noqa: F841 (read by DuckDB below)
        con.execute(f"insert into {name} select * from pieces")


def insert_checked(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> None:
    """Append `frame` to table `name` by column name, and make sure every row arrived."""
    before = con.execute(f"select count(*) from {name}").fetchone()[0]
    pieces = in_row_groups(frame)  # noqa: F841 (read by DuckDB below)
    con.execute(f"insert into {name} by name select * from pieces")
    after = con.execute(f"select count(*) from {name}").fetchone()[0]
    if after - before != frame.height:
        raise RuntimeError(f"{name}: {frame.height} rows inserted, {after - before} arrived")


def replace(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Swap a derived table's content (call inside a transaction)."""
    create_table(con, f"core.{table}", frame)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    con.execute("begin transaction")
    try:
        yield con
    except BaseException:
        con.execute("rollback")
        raise
    else:
        con.execute("commit")


# A bucketed read of a source of at least this many rows writes it to Parquet once (see `bucketed`); a smaller
# source stays in DuckDB's buffer cache, where a filtered scan per bucket is cheaper (1M orders, 2.3M events: merge
# 21 s with scans, 27 s with files; 10M orders, 23M events: 6.5 s a scan, 94 scans).
BUCKET_FILES_MIN_ROWS = 5_000_000
# The files hold parts of this many buckets: DuckDB's partitioned write slows down with many partitions (23M
# events: 94 partitions 239 s, 12 parts 80 s); a bucket is read back from its part with a filter.
BUCKETS_PER_PART = 8
_open_bucket_folders: set[Path] = set()
_part_tables = itertools.count()


@contextmanager
def bucketed(
    con: duckdb.DuckDBPyConnection,
    query: str,
    bucket_sql: str,
    buckets: int,
    rows: int,
    order_by: list[str],
    *,
    scanned: int | None = None,
) -> Iterator[Callable[[int], pl.DataFrame]]:
    """Read the rows of `query` bucket by bucket: yields `read(b)`, the rows for which the SQL expression
    `bucket_sql` (over the query's columns, in [0, buckets)) is b. Rows come in the order DuckDB scans them,
    or, from files (written by several threads), sorted by `order_by`, so that the order stays the same
    from run to run.

    `rows` is (about) the number of rows the query returns, `scanned` the number it reads to find them (by
    default as many: the query is a table). A query of fewer than BUCKET_FILES_MIN_ROWS rows that returns
    its whole source is scanned once per bucket with a filter: the source stays in DuckDB's cache. One that
    picks a part of a larger source runs once into a temporary table, scanned per bucket: each bucket would
    otherwise read the whole source again (10M orders, the ledger of a day's customers in 2 buckets: 22.8 s
    of reads, 8.4 s from the part). A query of more rows does not fit DuckDB's cache, so every scan would read
    and decompress all of it again (10M orders: merge spent about 610 s of its 780 in 94 scans of the 23M
    events): it runs once instead, into Parquet files in a folder beside the warehouse, removed on exit (or by
    the next such read, after a killed run). Tables the query reads must be tables, not Python frames (the
    copy runs in another scope).
    """
    if buckets <= 1:
        yield lambda bucket: con.sql(query).pl()
        return
    if rows < BUCKET_FILES_MIN_ROWS and (scanned or rows) <= rows:
        yield lambda bucket: con.sql(f"select * from ({query}) where ({bucket_sql}) = {bucket}").pl()
        return
    if rows < BUCKET_FILES_MIN_ROWS:
        part = f"_bucketed_{next(_part_tables)}"
        con.execute(f"create temp table {part} as select *, ({bucket_sql}) as _bucket from ({query})")
        try:
            yield lambda bucket: con.sql(f"select * exclude (_bucket) from {part} where _bucket = {bucket}").pl()
        finally:
            con.execute(f"drop table if exists {part}")
        return
    database = con.sql("select path from duckdb_databases() where database_name = current_database()").fetchone()[0]
    if database:
        # Named after the warehouse, whose one writer is this process: any such folder that is not one of this
        # process's open reads (the ledger reads orders and lines side by side) was left by a killed run.
        prefix, parent = f".{Path(database).name}.buckets-", Path(database).parent
        for stale in set(parent.glob(glob.escape(prefix) + "*")) - _open_bucket_folders:
            shutil.rmtree(stale, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    else:
        folder = Path(tempfile.mkdtemp(prefix="loyalty-buckets-"))
    _open_bucket_folders.add(folder)
    target = str(folder).replace("'", "''")
    try:
        con.execute(
            f"copy (select *, ({bucket_sql}) as _bucket, ({bucket_sql}) // {BUCKETS_PER_PART} as _part "
            f"from ({query})) to '{target}' (format parquet, partition_by (_part), compression 'lz4_raw')"
        )
        empty = con.sql(f"select * from ({query}) limit 0").pl()

        def read(bucket: int) -> pl.DataFrame:
            part = folder / f"_part={bucket // BUCKETS_PER_PART}"
            if not part.exists():
                return empty
            frame = (
                pl.scan_parquet(part / "*.parquet", hive_partitioning=False)
                .filter(pl.col("_bucket") == bucket)
                .drop("_bucket")
                .collect()
            )
            return frame.sort(order_by) if frame.height else empty

        yield read
    finally:
        _open_bucket_folders.discard(folder)
        shutil.rmtree(folder, ignore_errors=True)
