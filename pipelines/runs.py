"""The steps of a run, as plain functions over the warehouse: what the Dagster assets call.

Each step opens the warehouse once (DuckDB has one writer) and writes its tables in one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from pipelines import warehouse
from pipelines.identity import affected_scope, resolve_in_warehouse
from pipelines.ingest import present, read_files, validate_records
from pipelines.merge import merge_orders
from pipelines.reading import RawFile, check_raw_dir, discover_files
from pipelines.rules import Rules
from pipelines.schemas import ORDER_COLUMNS, Customers, OrderItems, Orders, conform
from pipelines.settings import Settings

log = logging.getLogger(__name__)

# `loyalty bench` times the parts of a step through this hook; a normal run passes nothing.
Stage = Callable[[str], AbstractContextManager]


def _no_stage(name: str) -> AbstractContextManager:
    return contextlib.nullcontext()


def value_counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    counts = frame.group_by(column).len().sort(column)
    return dict(zip(counts[column].to_list(), counts["len"].to_list(), strict=True))


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class IngestReport:
    files_seen: int
    files_ingested: int
    files_skipped: int
    files_unreadable: list[str]
    records_read: int
    records_accepted: int
    records_quarantined: int
    quarantined_by_reason: dict[str, int]
    retried: int
    readmitted: int
    warnings: list[str] = field(default_factory=list)


# Files are read and validated in batches of about this many raw bytes (a gzipped file counts for what it holds,
# roughly), so memory stays bounded however many files arrive at once: a batch needs some 15-25 times its size.
# LOYALTY_INGEST_BATCH_MB overrides it.
BATCH_BYTES = 64 * 2**20
GZIP_EXPANSION = 8
# Batches are written together once their events reach this many rows (and at the end): DuckDB writes an
# insert of whole row groups (122,880 rows) straight to the file, compressed once, while a smaller one goes
# through the write-ahead log and is compressed again at every checkpoint (at 1M orders: 56 s of writing in
# 23 batches against 31 s in 8). LOYALTY_INGEST_WRITE_ROWS overrides it.
WRITE_ROWS = 300_000


def batch_bytes() -> int:
    value = os.environ.get("LOYALTY_INGEST_BATCH_MB")
    return int(float(value) * 2**20) if value else BATCH_BYTES


def write_rows() -> int:
    value = os.environ.get("LOYALTY_INGEST_WRITE_ROWS")
    return int(value) if value else WRITE_ROWS


def file_batches(files: list[RawFile], limit: int) -> list[list[RawFile]]:
    """Consecutive runs of `files` (processing order kept) of at most `limit` bytes each, one file at least."""
    batches: list[list[RawFile]] = []
    current: list[RawFile] = []
    size = 0
    for f in files:
        weight = f.size_bytes * (GZIP_EXPANSION if f.gzipped else 1)
        if current and size + weight > limit:
            batches.append(current)
            current, size = [], 0
        current.append(f)
        size += weight
    if current:
        batches.append(current)
    return batches


def ingest(settings: Settings, rules: Rules, run_id: str, stage: Stage = _no_stage) -> IngestReport:
    """Ingest every raw file not ingested before (by sha256) into core.order_events / quarantine / ingest_files.

    New files are read and validated batch by batch (the next one read while this one is validated), so memory
    stays that of two batches. Batches are written once their events fill a few row groups (`WRITE_ROWS`), one
    transaction per write: a killed run keeps the batches it wrote, and their files are not read again. A status
    update whose order has not arrived is quarantined as `unknown_order` with its batch; once every batch is
    written, those whose order came in a later batch are admitted, as `unknown_order` records are on every run.
    The outcome does not depend on the batch size or on how batches are grouped into writes.
    """
    check_raw_dir(settings.raw_dir)  # before the warehouse is created
    with warehouse.connect(settings.warehouse) as con, contextlib.ExitStack() as stack:
        with stage("read"):
            warehouse.ensure_core(con)
            # The hashes the last ingest recorded (none before a first ingest): (path, size, mtime, ctime) -> sha256
            hashed: dict[tuple[str, int, int, int], str] = {}
            if "raw_file_hashes" in warehouse.table_names(con, "core"):
                hashed = {
                    tuple(row[:4]): row[4] for row in con.execute("select * from core.raw_file_hashes").fetchall()
                }
            files, warnings = discover_files(settings.raw_dir, hashed)
            now = now_utc()
            seen = con.sql("select path, sha256 from core.ingest_files").pl()
            seen_sha = set(seen["sha256"].to_list())
            seen_pairs = set(zip(seen["path"].to_list(), seen["sha256"].to_list(), strict=True))
            new, again, copies = [], [], []
            for f in files:
                if f.sha256 not in seen_sha:
                    new.append(f)
                    seen_sha.add(f.sha256)
                elif (f.rel_path, f.sha256) in seen_pairs:
                    again.append(f)
                else:
                    copies.append(f)
            retry = warehouse.read_table(con, "quarantine", "reason_code = 'unknown_order'")
            known = con.sql("select distinct order_id from core.order_events where record_kind = 'order'").pl()[
                "order_id"
            ]
        batches = file_batches(new, batch_bytes()) or [[]]
        record_key = ["file_sha256", "record_index"]
        held_frames: list[pl.DataFrame] = []
        reasons: dict[str, int] = {}  # quarantined records of the new files, by reason
        totals = {"records_read": 0, "records_accepted": 0, "records_quarantined": 0}
        errors: list[str] = []
        readmitted = 0
        unwritten: list[_Batch] = []  # batches read and validated, not yet written
        resolved: pl.DataFrame | None = None
        # The next batch is read in a thread while this one is validated and written: reading is mostly Python,
        # validating mostly DuckDB and Polars, which let go of the GIL, so on two cores they overlap. At most one
        # batch is read ahead.
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loyalty-read")
        stack.callback(reader.shutdown, wait=True, cancel_futures=True)
        ahead = reader.submit(read_files, batches[0], retry)
        for number, batch in enumerate(batches):
            first = number == 0
            with stage("read"):
                for f in batch:
                    log.info("ingesting %s (%s bytes)", f.rel_path, f.size_bytes)
                if len(batches) > 1:
                    log.info("batch %d of %d: %d files", number + 1, len(batches), len(batch))
                read = ahead.result()
                if number + 1 < len(batches):
                    ahead = reader.submit(read_files, batches[number + 1], None)
            with stage("validate"):
                result = validate_records(
                    read,
                    rules,
                    run_id=run_id,
                    ingested_at=now,
                    document_salt=settings.document_salt,
                    retry=retry if first else None,
                    known_orders=known,
                )
                del read
                for message in result.errors:
                    log.warning("unreadable file: %s", message)
                errors.extend(result.errors)
                readmitted += result.readmitted
                quarantine = result.quarantine
                file_rows = result.files
                if first:
                    # A retried record whose outcome is the same (still unknown_order) keeps its quarantine row
                    # as it was: a run that finds nothing new changes no row (idempotency). Only the retried
                    # records whose outcome changed are deleted and written again (re-admitted as events, or
                    # quarantined for another reason).
                    unchanged = (
                        quarantine.join(retry.select(record_key), on=record_key, how="semi")
                        .filter(pl.col("reason_code") == "unknown_order")
                        .select(record_key)
                    )
                    quarantine = quarantine.join(unchanged, on=record_key, how="anti")
                    resolved = retry.join(unchanged, on=record_key, how="anti").select(record_key)
                    file_rows = pl.concat([file_rows, _copy_rows(copies, now)])
                # A filtered frame keeps its batch's buffers alive (see `held_frames` below): the quarantine
                # rows, a few, are copied; the events are built column by column and share little.
                unwritten.append(_Batch(result.events, pl.from_arrow(quarantine.to_arrow()), file_rows))
                if sum(b.events.height for b in unwritten) >= write_rows() or number == len(batches) - 1:
                    _write_batches(con, unwritten, resolved, now)
                    unwritten, resolved = [], None
                full = pl.from_arrow(result.events.filter(pl.col("record_kind") == "order")["order_id"].to_arrow())
                known = pl.concat([known, full]) if full.len() else known
                # A frame filtered from a batch's frames shares their buffers: kept across batches, it would keep
                # every batch's memory alive. A copy through Arrow holds only its own rows.
                held_frames.append(pl.from_arrow(result.held.to_arrow()))
                batch_sha = [f.sha256 for f in batch]
                for reason, n in value_counts(
                    result.quarantine.filter(pl.col("file_sha256").is_in(batch_sha)), "reason_code"
                ).items():
                    reasons[reason] = reasons.get(reason, 0) + n
                for name in totals:
                    totals[name] += int(result.files[name].sum())
                del result
        with stage("validate"):
            # Status updates held back whose order came in a later batch of this run are admitted now.
            held = pl.concat(held_frames, how="vertical")
            admitted = held.filter(pl.col("order_id").is_in(present(held["order_id"], known).implode()))
            if admitted.height:
                keys = admitted.select(record_key)
                with warehouse.transaction(con):
                    warehouse.append(con, "order_events", admitted)
                    _delete_quarantined(con, keys)
                    _recount_files(con, keys, now)
                readmitted += admitted.join(retry.select(record_key), on=record_key, how="semi").height
                moved = admitted.filter(pl.col("file_sha256").is_in([f.sha256 for f in new])).height
                totals["records_accepted"] += moved
                totals["records_quarantined"] -= moved
                reasons["unknown_order"] = reasons.get("unknown_order", 0) - moved
        with stage("read"):
            # This run's files and their hashes, for the next run's `discover_files` (files gone are forgotten).
            hashes = pl.DataFrame(
                [(f.rel_path, f.size_bytes, f.mtime_ns, f.ctime_ns, f.sha256) for f in files],
                schema=RAW_FILE_HASH_COLUMNS,
                orient="row",
            )
            with warehouse.transaction(con):
                warehouse.create_table(con, "core.raw_file_hashes", hashes)
    return IngestReport(
        files_seen=len(files),
        files_ingested=len(new),
        files_skipped=len(again) + len(copies),
        files_unreadable=errors,
        records_read=totals["records_read"],
        records_accepted=totals["records_accepted"],
        records_quarantined=totals["records_quarantined"],
        quarantined_by_reason={reason: n for reason, n in sorted(reasons.items()) if n},
        retried=retry.height,
        readmitted=readmitted,
        warnings=warnings,
    )


# core.raw_file_hashes: the raw files of the last ingest, with the size and times they had when hashed.
RAW_FILE_HASH_COLUMNS = {
    "path": pl.String,
    "size_bytes": pl.Int64,
    "mtime_ns": pl.Int64,
    "ctime_ns": pl.Int64,
    "sha256": pl.String,
}


@dataclass
class _Batch:
    events: pl.DataFrame
    quarantine: pl.DataFrame
    files: pl.DataFrame


def _write_batches(con, batches: list[_Batch], resolved: pl.DataFrame | None, now: datetime) -> None:
    """Write batches in one transaction: their files are ingested together or, if the run dies, not at all.

    `resolved`: retried records whose outcome changed, whose old quarantine rows go.
    """
    with warehouse.transaction(con):
        warehouse.append(con, "order_events", pl.concat([b.events for b in batches], rechunk=False))
        if resolved is not None and resolved.height:
            _delete_quarantined(con, resolved)
        warehouse.append(con, "quarantine", pl.concat([b.quarantine for b in batches], rechunk=False))
        warehouse.append(con, "ingest_files", pl.concat([b.files for b in batches], rechunk=False))
        if resolved is not None and resolved.height:
            _recount_files(con, resolved, now)


def _copy_rows(copies: list[RawFile], now: datetime) -> pl.DataFrame:
    """core.ingest_files rows of files whose content was already ingested under another name."""
    return pl.DataFrame(
        {
            "path": [f.rel_path for f in copies],
            "source": [f.source for f in copies],
            "sha256": [f.sha256 for f in copies],
            "size_bytes": [f.size_bytes for f in copies],
            "records_read": [0] * len(copies),
            "records_accepted": [0] * len(copies),
            "records_quarantined": [0] * len(copies),
            "error": ["same content as a file already ingested: not ingested twice"] * len(copies),
            "first_ingested_at": [now] * len(copies),
            "last_ingested_at": [now] * len(copies),
        },
        schema=warehouse.CORE_TABLES["ingest_files"],
    )


def _delete_quarantined(con, keys: pl.DataFrame) -> None:
    """Remove the `unknown_order` quarantine rows of the records `keys` (file_sha256, record_index)."""
    con.execute(
        "delete from core.quarantine q using keys r where q.reason_code = 'unknown_order' "
        "and q.file_sha256 = r.file_sha256 and q.record_index = r.record_index"
    )


def _recount_files(con, keys: pl.DataFrame, now: datetime) -> None:
    """Re-admitted records move from quarantined to accepted in their file's counts; those files'
    last_ingested_at says when their records were last ingested. Files seen again unchanged are not touched."""
    con.execute(
        """
        update core.ingest_files f set
            records_accepted = (select count(*) from core.order_events e
                                where e.source_file = f.path and e.file_sha256 = f.sha256),
            records_quarantined = (select count(*) from core.quarantine q
                                   where q.source_file = f.path and q.file_sha256 = f.sha256),
            last_ingested_at = ?
        where f.records_read > 0 and f.sha256 in (select file_sha256 from keys)
        """,
        [now],
    )


@dataclass
class CanonicalReport:
    orders: int
    orders_by_status: dict[str, int]
    order_items: int
    customers: int
    mode: str = "full"  # 'full' (every order merged), 'incremental' (the orders new events touched), 'unchanged'
    orders_merged: int = 0


# Orders are merged in buckets of about this many events (by a hash of order_id: an order's events are always in
# one bucket), so memory stays bounded. LOYALTY_MERGE_BUCKET_EVENTS overrides it (tests use tiny buckets).
MERGE_BUCKET_EVENTS = 250_000


def buckets_for(rows: int, variable: str, per_bucket: int) -> int:
    """How many buckets `rows` need at `per_bucket` rows each (environment variable `variable` overrides it)."""
    per_bucket = int(os.environ.get(variable) or per_bucket)
    return max(1, -(-rows // max(per_bucket, 1)))


def merge_buckets(events: int) -> int:
    return buckets_for(events, "LOYALTY_MERGE_BUCKET_EVENTS", MERGE_BUCKET_EVENTS)


# Identity builds the customers in parts of about this many events (by a hash of customer_id), so DuckDB's window
# and list aggregates stay within its memory limit (10M orders, 23M events in one query, failed at 3 GB).
# LOYALTY_IDENTITY_BUCKET_EVENTS overrides it.
IDENTITY_BUCKET_EVENTS = 2_000_000


def identity_buckets(events: int) -> int:
    return buckets_for(events, "LOYALTY_IDENTITY_BUCKET_EVENTS", IDENTITY_BUCKET_EVENTS)


# A rebuild merges only the orders that new events touched unless they are more than this share of all orders.
INCREMENTAL_SHARE = 0.25


def canonical_fingerprint(rules: Rules) -> str:
    """What the canonical tables depend on besides the events: the FX rates and the merge and identity code.
    When it changes, the next rebuild merges every order again."""
    from pipelines import identity, merge

    digest = hashlib.sha256(json.dumps({k: str(v) for k, v in sorted(rules.fx_rates.items())}).encode())
    for module in (merge, identity):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def rebuild_canonical(settings: Settings, rules: Rules, stage: Stage = _no_stage) -> CanonicalReport:
    """Bring core.orders, core.order_items and core.customers up to date with every accepted event.

    core.canonical_runs lists the ingest runs whose events the tables hold (with the fingerprint of the rules
    and code that merged them). Only the orders that events of other runs touch are merged again (all of their
    events, old and new); identity is resolved again over the orders of every customer those orders can
    change (`identity.affected_scope`), so a new record that joins two customers re-labels their old orders
    too. The result is the same as merging everything, which is what happens on the first run, when the
    fingerprint changed, or when most orders were touched anyway.
    """
    fingerprint = canonical_fingerprint(rules)
    with warehouse.connect(settings.warehouse) as con:
        warehouse.ensure_core(con)
        con.execute("create table if not exists core.canonical_runs (run_id varchar, fingerprint varchar)")
        new_runs = con.sql(  # noqa: F841 (read by DuckDB)
            "select distinct run_id from core.order_events where run_id not in "
            "(select run_id from core.canonical_runs where fingerprint = ?)",
            params=[fingerprint],
        ).pl()
        current = (
            con.sql(
                "select count(*) = 0 from core.canonical_runs where fingerprint <> ?", params=[fingerprint]
            ).fetchone()[0]
            and con.sql("select count(*) > 0 from core.canonical_runs").fetchone()[0]
        )
        touched = None
        if current:
            touched = con.sql("select distinct order_id from core.order_events semi join new_runs using (run_id)").pl()
            existing = con.sql("select count(*) from core.orders").fetchone()[0]
            if touched.height > INCREMENTAL_SHARE * max(existing, 1):
                touched = None
        if touched is not None and touched.height == 0:
            mode, merged = "unchanged", 0
        else:
            mode = "full" if touched is None else "incremental"
            merged = _merge_and_resolve(con, rules, touched, stage)
            with warehouse.transaction(con):
                if mode == "full":
                    con.execute("delete from core.canonical_runs")
                merged_runs = "(select distinct run_id from core.order_events)" if mode == "full" else "new_runs"
                con.execute(f"insert into core.canonical_runs select run_id, ? from {merged_runs}", [fingerprint])
        by_status = con.sql("select status, count(*) from core.orders group by status order by status").fetchall()
        order_count = con.sql("select count(*) from core.orders").fetchone()[0]
        item_count = con.sql("select count(*) from core.order_items").fetchone()[0]
        customer_count = con.sql("select count(*) from core.customers").fetchone()[0]
    return CanonicalReport(
        orders=order_count,
        orders_by_status={status: n for status, n in by_status},
        order_items=item_count,
        customers=customer_count,
        mode=mode,
        orders_merged=merged,
    )


def _merge_and_resolve(con, rules: Rules, touched: pl.DataFrame | None, stage: Stage) -> int:
    """Merge the `touched` orders (every order when None) and resolve identity over the events whose customer can
    change (every event when None; see `identity.affected_scope`); returns the number of orders merged. Writes
    in one transaction."""
    if touched is None:
        source, scope = "select * from core.order_events", "core.order_events"
    else:  # a table, not the frame: `bucketed` may read the source in a COPY, which sees no Python frame
        con.execute("create or replace temp table _merge_touched as select order_id from touched")
        # the events' row ids first (one column scanned), then those rows: DuckDB skips the row groups before
        # the smallest row id, where a semi join read every column of every event (10M orders, a day's 189,242
        # orders: 4.6 s against 2.6 s)
        source = (
            "select * from core.order_events where rowid in "
            "(select rowid from core.order_events semi join _merge_touched using (order_id))"
        )
    with stage("identity"):
        if touched is not None:
            scope = affected_scope(con, "_merge_touched")
        events = con.sql(f"select count(*) from {scope}").fetchone()[0]
        order_customer, customers = resolve_in_warehouse(con, scope, buckets=identity_buckets(events))
        if touched is not None:
            con.execute(f"drop table {scope}")
        Customers.validate(customers, lazy=True)
    count = con.sql(f"select count(*) from ({source})").fetchone()[0]
    all_events = con.sql("select count(*) from core.order_events").fetchone()[0]
    buckets = merge_buckets(count)
    merged = 0
    with warehouse.transaction(con), contextlib.ExitStack() as stack:
        with stage("merge"):
            bucket_events = stack.enter_context(
                warehouse.bucketed(
                    con, source, f"hash(order_id) % {buckets}", buckets, count, ["event_id"], scanned=all_events
                )
            )
        for bucket in range(buckets):
            with stage("merge"):
                events = bucket_events(bucket)
                orders, items = merge_orders(events, rules)
                del events
            with stage("identity"):
                orders = conform(
                    orders.drop("customer_id").join(order_customer, on="order_id", how="left"), ORDER_COLUMNS
                )
                Orders.validate(orders, lazy=True)
                OrderItems.validate(items, lazy=True)
                merged += orders.height
                for table, frame in (("orders", orders), ("order_items", items)):
                    if bucket == 0:
                        warehouse.create_table(con, f"core._staged_{table}", frame)
                    else:
                        warehouse.insert_checked(con, f"core._staged_{table}", frame)
        with stage("identity"):
            if touched is None:
                con.execute(
                    "create or replace table core.orders as select * from core._staged_orders order by order_id"
                )
                con.execute(
                    "create or replace table core.order_items as "
                    "select * from core._staged_order_items order by order_id, line_number"
                )
            else:
                for table in ("orders", "order_items"):
                    con.execute(f"delete from core.{table} where order_id in (select order_id from _merge_touched)")
                    con.execute(f"insert into core.{table} by name select * from core._staged_{table}")
                # a new record can join two customers, or bring a customer a smaller identifier (a new id):
                # their old orders are relabelled
                con.execute(
                    "update core.orders o set customer_id = c.customer_id from order_customer c "
                    "where o.order_id = c.order_id and o.customer_id is distinct from c.customer_id"
                )
                replaced = "select customer_id from _identity_customers"
                con.execute(f"delete from core.customers where customer_id in ({replaced})")
                warehouse.insert_checked(con, "core.customers", customers)
            con.execute("drop table core._staged_orders")
            con.execute("drop table core._staged_order_items")
            if touched is None:
                warehouse.replace(con, "customers", customers)
    return merged


@dataclass
class ClvReport:
    customers: int
    predicted: int
    params: dict[str, float]
    warnings: list[str]


def fit_lifetime_value(settings: Settings, rules: Rules) -> ClvReport:
    """Fit BG/NBD + Gamma-Gamma on delivered orders up to the as-of date; write core.clv_customers / _params."""
    import warnings

    from pipelines.clv import fit_clv

    with warehouse.connect(settings.warehouse) as con:
        transactions = con.sql(
            "select customer_id, placed_at, net_amount_reporting from core.orders "
            "where status = 'delivered' and placed_at is not null and customer_id is not null"
        ).pl()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # returned in result.warnings and logged by the asset
            result = fit_clv(transactions, settings.as_of, rules)
        with warehouse.transaction(con):
            warehouse.replace(con, "clv_customers", result.customers)
            warehouse.replace(con, "clv_model_params", result.params)
    params = dict(zip(result.params["parameter"].to_list(), result.params["value"].to_list(), strict=True))
    return ClvReport(
        customers=result.customers.height,
        predicted=result.customers.filter(pl.col("clv").is_not_null()).height,
        params=params,
        warnings=list(result.warnings),
    )


@dataclass
class LedgerReport:
    entries: int
    entries_by_type: dict[str, int]
    customers: int
    tiers: dict[str, int]
    unpriced_redemptions: int
    mode: str = "full"  # or "incremental": only the customers whose results could change were computed
    customers_computed: int = 0


# The ledger is computed in buckets of about this many orders (by a hash of customer_id: every result depends on
# one customer's history only). LOYALTY_LEDGER_BUCKET_ORDERS overrides it (tests use tiny buckets).
LEDGER_BUCKET_ORDERS = 250_000
# Each ledger table, with the key its rows are sorted by first (the rest of the order is the ledger's own).
LEDGER_TABLES = {
    "points_ledger": ("points_ledger", "customer_id"),
    "customer_points": ("customer_points", "customer_id"),
    "tier_history": ("tier_history", "customer_id"),
    "points_reconciliation": ("reconciliation", "order_id"),
    "unpriced_redemptions": ("unpriced_redemptions", "order_id"),
}


def ledger_inputs_sql() -> str:
    """One row per customer: a hash of the columns of their orders and order lines that the ledger reads (a
    change to another column cannot change their results, so it does not make them computed again).

    Rows are combined by summing their hashes (modulo 2^64): a multiset digest, independent of row order. Not
    xor: two lines alike in every column read (a product on two lines) would cancel out, and adding or
    removing such a pair would change nothing. The orders' hashes and their lines' (each line's with its
    order_id, so a line moved to another order changes the sum) are summed per customer in one aggregation,
    where summing the lines per order first took an aggregation with a group per order (1M orders, a daily
    run's warehouse: 1.4–1.9 s that way, 0.9–1.1 s this way)."""
    from pipelines.ledger import ITEM_INPUT_COLUMNS, ORDER_INPUT_COLUMNS

    order_columns = ", ".join(ORDER_INPUT_COLUMNS)
    item_columns = ", ".join(f"i.{c}" for c in ITEM_INPUT_COLUMNS)
    return f"""
        select customer_id, {_digest("row_hash")} as inputs
        from (
            select customer_id, hash({order_columns}) as row_hash from core.orders where customer_id is not null
            union all
            select o.customer_id, hash({item_columns}) as row_hash
            from core.order_items i
            join core.orders o on i.order_id = o.order_id
            where o.customer_id is not null
        )
        group by customer_id
    """


def _digest(row_hash: str) -> str:
    """The sum of a group's 64-bit `row_hash`es, modulo 2^64 (DuckDB sums them in 128 bits)."""
    return f"cast(sum({row_hash}) % 18446744073709551616 as ubigint)"


def ledger_buckets(orders: int) -> int:
    return buckets_for(orders, "LOYALTY_LEDGER_BUCKET_ORDERS", LEDGER_BUCKET_ORDERS)


def ledger_fingerprint(rules: Rules) -> str:
    """What the ledger depends on besides the orders and the as-of date: the rules and the ledger code, and
    how the inputs are hashed (`ledger_inputs_sql`: hashes made another way would all differ from the stored
    ones; with the fingerprint changed, every customer is computed and the stored hashes are made again)."""
    from pipelines import hashing, ledger

    digest = hashlib.sha256(rules.model_dump_json().encode())
    digest.update(ledger_inputs_sql().encode())
    for module in (ledger, hashing):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def compute_points(settings: Settings, rules: Rules, stage: Stage = _no_stage) -> LedgerReport:
    """Bring the points ledger, balances, tiers and reconciliation up to date with the canonical orders (SPEC §5).

    Every result depends on one customer's orders, the rules and the as-of date. core.ledger_inputs keeps a hash
    of each customer's orders and lines (`ledger_inputs_sql`), core.ledger_runs the as-of date and rules of the
    last computation. A later computation (same rules, same or later as-of date) computes again only the
    customers whose results can differ (`_customers_to_compute`) and replaces their rows; the others' rows stay
    as they are. The first computation, new rules or code, an earlier as-of date, or more than
    INCREMENTAL_SHARE of the customers to compute: every customer. Either way customers are taken in buckets
    (all of a customer's orders in one). A full computation sorts each table as one computation over all
    customers would; an incremental one appends the customers it computed (row order carries no meaning).
    """
    fingerprint = ledger_fingerprint(rules)
    with warehouse.connect(settings.warehouse) as con:
        con.execute(f"create or replace temp table _ledger_inputs as {ledger_inputs_sql()}")
        customers_now = con.sql("select count(*) from _ledger_inputs").fetchone()[0]
        previous = _last_ledger_run(con)
        incremental = False
        if previous is not None and previous[1] == fingerprint and previous[0] <= settings.as_of:
            computed = _customers_to_compute(con, rules, previous[0], settings.as_of)
            incremental = computed <= INCREMENTAL_SHARE * max(customers_now, 1)
        if not incremental:
            computed = customers_now
        with warehouse.transaction(con):
            if incremental:
                # the customers' rows go, and their new rows are appended bucket by bucket, in this transaction
                # (through staged tables, 10M orders: 5 s more to copy them)
                scope = "customer_id in (select customer_id from _ledger_computed)"
                orders = con.sql(f"select count(*) from core.orders where {scope}").fetchone()[0]
                for table in LEDGER_TABLES:
                    con.execute(f"delete from core.{table} where {scope}")
                _stage_ledger(con, rules, settings.as_of, scope, orders, staged=False)
            else:
                orders = con.sql("select count(*) from core.orders").fetchone()[0]
                _stage_ledger(con, rules, settings.as_of, "true", orders, staged=True)
                for table, (_, key) in LEDGER_TABLES.items():
                    con.execute(
                        f"create or replace table core.{table} as "
                        f"select * exclude (_row) from core._staged_{table} order by {key}, _row"
                    )
            for table in LEDGER_TABLES:
                con.execute(f"drop table if exists core._staged_{table}")
            if incremental:  # only the rows that changed: most customers' inputs are as they were
                con.execute(
                    "delete from core.ledger_inputs o where not exists (select 1 from _ledger_inputs n "
                    "where n.customer_id = o.customer_id and n.inputs = o.inputs)"
                )
                con.execute(
                    "insert into core.ledger_inputs select * from _ledger_inputs n where not exists "
                    "(select 1 from core.ledger_inputs o where o.customer_id = n.customer_id)"
                )
            else:
                con.execute("create or replace table core.ledger_inputs as select * from _ledger_inputs order by 1")
            con.execute(
                "create or replace table core.ledger_runs as select ?::date as as_of, ?::varchar as fingerprint",
                [settings.as_of, fingerprint],
            )
            _record_ledger_changes(con, incremental)
        counts = {
            name: dict(con.sql(f"select {column}, count(*) from core.{table} group by 1 order by 1").fetchall())
            for name, table, column in (
                ("entries", "points_ledger", "entry_type"),
                ("tiers", "customer_points", "tier"),
            )
        }
        customers = con.sql("select count(*) from core.customer_points").fetchone()[0]
        unpriced = con.sql("select count(*) from core.unpriced_redemptions").fetchone()[0]
    return LedgerReport(
        entries=sum(counts["entries"].values()),
        entries_by_type=counts["entries"],
        customers=customers,
        tiers=counts["tiers"],
        unpriced_redemptions=unpriced,
        mode="incremental" if incremental else "full",
        customers_computed=computed,
    )


# core.ledger_changes keeps the customers of this many computations (see `_record_ledger_changes`).
LEDGER_CHANGES_KEPT = 14


def _record_ledger_changes(con, incremental: bool) -> None:
    """Record, in core.ledger_changes (computation, customer_id), which customers this computation wrote, for the
    marts built incrementally from the ledger (dbt's `fct_orders` reads the changes since the computation it was
    built from). Computations are numbered 1, 2, ...; a row with a null customer_id means every customer: a full
    computation (the earlier rows are then deleted), or the oldest computation kept (the rows of earlier ones
    are deleted: a reader built from before it cannot tell what changed, and builds again whole). A computation
    that computed nobody adds no row and takes no number."""
    con.execute("create table if not exists core.ledger_changes (computation bigint, customer_id varchar)")
    number = con.sql("select coalesce(max(computation), 0) + 1 from core.ledger_changes").fetchone()[0]
    if incremental:
        con.execute("insert into core.ledger_changes select ?, customer_id from _ledger_computed", [number])
    else:
        con.execute("delete from core.ledger_changes")
        con.execute("insert into core.ledger_changes values (?, null)", [number])
    oldest = number - LEDGER_CHANGES_KEPT
    if (
        oldest > 0
        and con.execute("select count(*) from core.ledger_changes where computation < ?", [oldest]).fetchone()[0]
    ):
        con.execute("delete from core.ledger_changes where computation <= ?", [oldest])
        con.execute("insert into core.ledger_changes values (?, null)", [oldest])


def _stage_ledger(con, rules: Rules, as_of: date, scope: str, orders_in_scope: int, *, staged: bool) -> None:
    """The ledger of the customers in `scope` (SQL over core.orders, holding `orders_in_scope` orders), bucket by
    bucket: `staged`, into new tables core._staged_<table> with each bucket's row order in `_row` (empty tables
    when the scope has no order), else appended to core.<table>."""
    from pipelines.ledger import ITEM_INPUT_COLUMNS, LEDGER_COLUMNS, ORDER_INPUT_COLUMNS, compute_ledger

    if staged:
        for table, (attribute, _) in LEDGER_TABLES.items():
            empty = conform(pl.DataFrame(), LEDGER_COLUMNS[attribute]).with_row_index("_row")
            warehouse.create_table(con, f"core._staged_{table}", empty)
    buckets = ledger_buckets(orders_in_scope)
    # The lines in scope, estimated from the lines per order overall (counting them would be a join): the figure
    # only chooses how `bucketed` reads them.
    all_orders, all_items = con.sql(
        "select (select count(*) from core.orders), (select count(*) from core.order_items)"
    ).fetchone()
    item_rows = orders_in_scope * all_items // max(all_orders, 1)
    bucket_of = f"coalesce(hash(customer_id), 0) % {buckets}"
    # Only the columns the ledger reads (10M orders, a day's 3M orders: 47 columns took 2.6 s to copy out and
    # 5.5 s to read back in 12 buckets)
    orders_query = f"select {', '.join(ORDER_INPUT_COLUMNS)} from core.orders where {scope}"
    item_columns = ", ".join(f"i.{c}" for c in dict.fromkeys(["order_id", "line_number", *ITEM_INPUT_COLUMNS]))
    items_query = (
        f"select {item_columns}, {bucket_of} as _ledger_bucket from core.order_items i "
        f"join (select order_id, customer_id from core.orders where {scope}) o on i.order_id = o.order_id"
    )
    with (
        warehouse.bucketed(
            con, orders_query, bucket_of, buckets, orders_in_scope, ["order_id"], scanned=all_orders
        ) as bucket_orders,
        warehouse.bucketed(
            con, items_query, "_ledger_bucket", buckets, item_rows, ["order_id", "line_number"], scanned=all_items
        ) as bucket_items,
    ):
        for bucket in range(buckets):
            orders = bucket_orders(bucket)
            if orders.height == 0:
                continue
            items = bucket_items(bucket).drop("_ledger_bucket")
            result = compute_ledger(orders, items, rules, as_of)
            del orders, items
            for table, (attribute, _) in LEDGER_TABLES.items():
                frame = getattr(result, attribute)
                if staged:
                    warehouse.insert_checked(con, f"core._staged_{table}", frame.with_row_index("_row"))
                else:
                    warehouse.insert_checked(con, f"core.{table}", frame)
            del result


def _last_ledger_run(con) -> tuple[date, str] | None:
    if not {"ledger_runs", "ledger_inputs", "points_ledger", "customer_points"} <= warehouse.table_names(con, "core"):
        return None
    row = con.sql("select as_of, fingerprint from core.ledger_runs").fetchone()
    return (row[0], row[1]) if row else None


def _customers_to_compute(con, rules: Rules, before: date, now: date) -> int:
    """Fill the temp table _ledger_computed with the customers whose ledger may differ from the one computed as
    of `before` (same rules), now that orders may have changed and the as-of date is `now`; return their count.

    A customer's results change only through their orders or through an instant passing in the window
    (end of `before`, end of `now`]: an order placed, delivered (its earn posts `pending_days` later) or
    cancelled; a lot reaching `expiry_days`; a qualifying entry leaving the 365-day window; or a month start
    evaluating a tier other than the one held. So: customers whose orders changed (the hash of their orders
    and lines), who are new or gone; with an order dated in the window (from `pending_days` before it); with
    a ledger entry that expires or leaves the qualifying window in it; and, when a month start falls in it,
    those whose held tier is not the tier their qualifying points give. Bounds are widened by a day (computing
    a customer too many changes nothing). At the same as-of date no instant passes: only changed orders count
    (a second run on the same inputs computes nobody).
    """
    from pipelines.ledger import QUALIFYING_WINDOW, as_of_end

    slack = timedelta(days=1)
    lo, hi = as_of_end(before) - slack, as_of_end(now) + slack
    orders_lo = lo - timedelta(days=rules.earn.pending_days)
    queries = [
        "select coalesce(n.customer_id, o.customer_id) as customer_id from _ledger_inputs n "
        "full join core.ledger_inputs o on n.customer_id = o.customer_id where n.inputs is distinct from o.inputs",
        "select customer_id from core.orders where customer_id is not null and ("
        + " or ".join(f"{c} between $orders_lo and $hi" for c in ("placed_at", "delivered_at", "cancelled_at"))
        + ")",
        "select customer_id from core.points_ledger where "
        f"(points > 0 and effective_at + interval {int(rules.expiry_days)} day between $lo and $hi) "
        f"or effective_at + interval {QUALIFYING_WINDOW.days} day between $lo and $hi",
    ]
    next_month = date(before.year + before.month // 12, before.month % 12 + 1, 1)
    if next_month <= now:
        reached = " + ".join(f"(qualifying_points >= {int(t.min_points)})::int" for t in rules.tiers[1:]) or "0"
        names = "[" + ", ".join("'" + t.name.replace("'", "''") + "'" for t in rules.tiers) + "]"
        queries.append(
            f"select customer_id from core.customer_points where "
            f"list_position({names}, tier) is distinct from ({reached}) + 1"
        )
    if before == now:
        queries = queries[:1]
    con.execute(
        "create or replace temp table _ledger_computed as select distinct customer_id from ("
        + " union all ".join(queries)
        + ") where customer_id is not null",
        {"lo": lo, "hi": hi, "orders_lo": orders_lo} if before != now else {},
    )
    return con.sql("select count(*) from _ledger_computed").fetchone()[0]


def currencies_without_rate(settings: Settings, rules: Rules) -> list[str]:
    """Currencies of orders already in the warehouse that the rules give no FX rate (bad usage)."""
    if not settings.warehouse.exists():
        return []
    with warehouse.connect(settings.warehouse, read_only=True) as con:
        if "orders" not in warehouse.table_names(con, "core"):
            return []
        found = [
            r[0] for r in con.execute("select distinct currency from core.orders where currency is not null").fetchall()
        ]
    return sorted(c for c in found if c not in rules.fx_rates)
