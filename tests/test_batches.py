"""Ingest in batches (issue #6): however the new files are cut into batches, the warehouse comes out the same.

`loyalty run` reads and validates new files batch by batch so memory stays bounded. A status update whose
order arrives in a later batch is held back and admitted at the end; one whose order never arrives is
quarantined as `unknown_order`, exactly as when every file is read at once.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from pipelines import runs, warehouse
from pipelines.generate import generate
from pipelines.reading import discover_files
from pipelines.settings import Settings
from tests.helpers import default_rules, query

AS_OF = "2025-06-30"
# What each table holds, minus the columns that name the run.
TABLES = {
    "order_events": "select * exclude (run_id, ingested_at) from core.order_events order by event_id",
    "quarantine": "select * exclude (run_id, ingested_at) from core.quarantine order by file_sha256, record_index",
    "ingest_files": "select * exclude (first_ingested_at, last_ingested_at) from core.ingest_files order by path",
    "orders": "select * exclude (updated_at) from core.orders order by order_id",
    "order_items": "select * from core.order_items order by order_id, line_number",
    "customers": "select * from core.customers order by customer_id",
}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batches") / "raw"
    generate(root, orders=1500, seed=7, end_date=date(2025, 6, 30))
    # Status updates that come first in processing order (file path), before the files of their orders.
    updates = sorted((root / "brevo").rglob("*-updates.*"))[-1]
    updates.rename(root / "brevo" / f"0-early-{updates.name}")
    return root


def run_with_batch_mb(raw: Path, root: Path, batch_mb: str, monkeypatch) -> Settings:
    monkeypatch.setenv("LOYALTY_INGEST_BATCH_MB", batch_mb)
    settings = Settings.resolve(raw_dir=str(raw), warehouse=str(root / "loyalty.duckdb"), as_of=AS_OF)
    rules = default_rules()
    runs.ingest(settings, rules, run_id="r1")
    runs.rebuild_canonical(settings, rules)
    return settings


def snapshot(settings: Settings) -> dict[str, list[tuple]]:
    return {name: query(settings.warehouse, sql) for name, sql in TABLES.items()}


@pytest.mark.parametrize("write_rows", ["1", "40", "300000"])
def test_one_file_per_batch_gives_the_same_warehouse_as_one_batch(raw, tmp_path, monkeypatch, write_rows) -> None:
    files = discover_files(raw)[0]
    assert len(runs.file_batches(files, int(0.001 * 2**20))) == len(files)  # every file its own batch
    whole = snapshot(run_with_batch_mb(raw, tmp_path / "whole", "100000", monkeypatch))
    # Batches are written together as soon as their events reach `write_rows` (1: each batch with an event).
    writes: list[list[int]] = []  # events per batch, of each write
    write_batches = runs._write_batches

    def spy(con, batches, *rest) -> None:
        writes.append([b.events.height for b in batches])
        write_batches(con, batches, *rest)

    monkeypatch.setattr(runs, "_write_batches", spy)
    monkeypatch.setenv("LOYALTY_INGEST_WRITE_ROWS", write_rows)
    split_settings = run_with_batch_mb(raw, tmp_path / "split", "0.001", monkeypatch)
    assert sum(len(w) for w in writes) == len(files)
    for write in writes[:-1]:
        assert sum(write[:-1]) < int(write_rows) <= sum(write)
    assert sum(writes[-1][:-1]) < int(write_rows)
    assert len(writes) == 1 if write_rows == "300000" else 1 < len(writes) < len(files)
    split = snapshot(split_settings)
    for name in TABLES:
        assert len(split[name]) == len(whole[name]), name
        assert split[name] == whole[name], name
    # The case the batches make hard happened: updates admitted though their order came in a later file.
    position = {f.rel_path: i for i, f in enumerate(files)}
    later = query(
        split_settings.warehouse,
        """
        select u.source_file, o.source_file from core.order_events u
        join core.order_events o on o.order_id = u.order_id and o.record_kind = 'order'
        where u.record_kind = 'update'
        """,
    )
    assert any(position[update_file] < position[order_file] for update_file, order_file in later)
    counts = query(
        split_settings.warehouse,
        "select sum(records_read), sum(records_accepted), sum(records_quarantined) from core.ingest_files",
    )[0]
    events = query(split_settings.warehouse, "select count(*) from core.order_events")[0][0]
    quarantined = query(split_settings.warehouse, "select count(*) from core.quarantine")[0][0]
    assert counts == (events + quarantined, events, quarantined)


def test_file_batches_keep_processing_order_and_size(raw) -> None:
    files = discover_files(raw)[0]
    limit = 200_000
    batches = runs.file_batches(files, limit)
    assert [f for batch in batches for f in batch] == files
    for batch in batches:
        weight = sum(f.size_bytes * (runs.GZIP_EXPANSION if f.gzipped else 1) for f in batch)
        assert len(batch) == 1 or weight <= limit


@pytest.mark.parametrize("files", [False, True], ids=["scans", "files"])
def test_merging_in_buckets_gives_the_same_canonical_tables(raw, tmp_path, monkeypatch, files) -> None:
    """Buckets scanned one by one, or read from files written once (warehouse.bucketed): the same tables."""
    whole = snapshot(run_with_batch_mb(raw, tmp_path / "whole", "100000", monkeypatch))
    monkeypatch.setattr(warehouse, "BUCKET_FILES_MIN_ROWS", 0 if files else 10**9)
    monkeypatch.setenv("LOYALTY_MERGE_BUCKET_EVENTS", "500")
    assert runs.merge_buckets(4000) == 8
    buckets = snapshot(run_with_batch_mb(raw, tmp_path / "buckets", "100000", monkeypatch))
    for name in ("orders", "order_items", "customers"):
        assert len(buckets[name]) == len(whole[name]) > 0, name
        assert buckets[name] == whole[name], name


LEDGER_TABLES = ("points_ledger", "customer_points", "tier_history", "points_reconciliation", "unpriced_redemptions")


@pytest.mark.parametrize("files", [False, True], ids=["scans", "files"])
def test_the_ledger_in_buckets_of_customers_gives_the_same_tables_in_the_same_row_order(
    raw, tmp_path, monkeypatch, files
) -> None:
    def ledger(root: Path, bucket_orders: str) -> dict[str, list[tuple]]:
        settings = run_with_batch_mb(raw, root, "100000", monkeypatch)
        monkeypatch.setenv("LOYALTY_LEDGER_BUCKET_ORDERS", bucket_orders)
        report = runs.compute_points(settings, default_rules())
        assert report.entries > 0 and report.customers > 0
        # no ORDER BY: the tables' own row order must be the same too
        return {table: query(settings.warehouse, f"select * from core.{table}") for table in LEDGER_TABLES}

    whole = ledger(tmp_path / "whole", "100000000")
    assert runs.ledger_buckets(1500) == 1
    monkeypatch.setenv("LOYALTY_LEDGER_BUCKET_ORDERS", "100")
    assert runs.ledger_buckets(1500) == 15
    monkeypatch.setattr(warehouse, "BUCKET_FILES_MIN_ROWS", 0 if files else 10**9)
    buckets = ledger(tmp_path / "buckets", "100")
    for table in LEDGER_TABLES:
        assert buckets[table] == whole[table], table
    assert len(whole["points_ledger"]) > 1000 and len(whole["tier_history"]) > 0
