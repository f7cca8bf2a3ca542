"""The read-only copy of the warehouse analysts open, and the marts as Parquet, published after a successful run.

The working warehouse has one writer (the run), and a DuckDB file cannot be opened while another process writes it.
Analysts therefore read a copy that changes only when a run has finished, all of it at once:

- the copy is written to a hidden file beside the published one, opened read-only to check that every mart arrived
  with all its rows, then renamed over the published file (`os.replace`, atomic on one filesystem). A connection
  opened before keeps reading the previous file (its inode lives until the last reader closes it); a connection
  opened after sees the new one. Never half of each.
- the Parquet files (one per table of schema `marts`) are written from the checked copy into a hidden folder and
  swapped in as a whole (pipelines.atomic: for a few microseconds between two renames the folder does not exist).

Nothing here runs when an upstream step failed: the Dagster asset that calls `publish` depends on every other asset.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipelines import warehouse
from pipelines.atomic import sibling, staged_dir

PUBLISHED_SCHEMA = "marts"


class PublishError(RuntimeError):
    """The copy is not what it should be: the published warehouse is left as it was."""


@dataclass
class Published:
    path: Path
    parquet_dir: Path
    rows: dict[str, int]  # marts table -> rows
    size_bytes: int


def mart_rows(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row count of every table of schema `marts`."""
    tables = [
        row[0]
        for row in con.execute(
            "select table_name from duckdb_tables() where schema_name = ? order by table_name", [PUBLISHED_SCHEMA]
        ).fetchall()
    ]
    return {t: con.execute(f'select count(*) from {PUBLISHED_SCHEMA}."{t}"').fetchone()[0] for t in tables}


def publish(warehouse_path: Path, published_path: Path, parquet_dir: Path) -> Published:
    """Copy the working warehouse to `published_path` and its marts to `parquet_dir`, each replaced atomically."""
    warehouse_path, published_path, parquet_dir = Path(warehouse_path), Path(published_path), Path(parquet_dir)
    with warehouse.connect(warehouse_path) as con:  # the run's only writer at this point: flush the WAL into the file
        con.execute("checkpoint")
        expected = mart_rows(con)
    if not expected:
        raise PublishError(f"{warehouse_path} has no table in schema {PUBLISHED_SCHEMA}: nothing to publish")

    published_path.parent.mkdir(parents=True, exist_ok=True)
    copy = sibling(published_path, "tmp")
    try:
        shutil.copyfile(warehouse_path, copy)
        with warehouse.connect(copy, read_only=True) as con:
            copied = mart_rows(con)
            if copied != expected:
                raise PublishError(f"the copy of {warehouse_path} differs from it: {copied} != {expected}")
            with staged_dir(parquet_dir) as staged:
                for table in copied:
                    target = str(staged / f"{table}.parquet").replace("'", "''")
                    con.execute(f"copy {PUBLISHED_SCHEMA}.\"{table}\" to '{target}' (format parquet)")
                os.replace(copy, published_path)
    finally:
        copy.unlink(missing_ok=True)
    return Published(
        path=published_path, parquet_dir=parquet_dir, rows=copied, size_bytes=published_path.stat().st_size
    )


def docs_path(warehouse_path: Path) -> Path:
    """Where the dbt docs of a warehouse go: one self-contained page beside it, `docs/index.html`."""
    return Path(warehouse_path).parent / "docs" / "index.html"


def ship_docs(static_index: Path, target: Path) -> int:
    """Copy dbt's `static_index.html` (manifest and catalog inlined) to `target` atomically; its size in bytes."""
    text = Path(static_index).read_text(encoding="utf-8")
    if '"MANIFEST.JSON INLINE DATA"' in text or '"CATALOG.JSON INLINE DATA"' in text:
        raise PublishError(f"{static_index} lacks the inlined manifest or catalog: not a `dbt docs generate --static`")
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = sibling(target, "tmp")
    try:
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    return target.stat().st_size
