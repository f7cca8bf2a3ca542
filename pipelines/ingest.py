"""From raw files to accepted events and quarantined records, with conservation per file.

Pure logic: no Dagster, no warehouse. `parse_files` takes the files to ingest and returns three frames shaped
like `core.order_events`, `core.quarantine` and `core.ingest_files`. Every record read ends in exactly one of
the first two (conservation), which `core.ingest_files` counts per file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import ModuleType

import polars as pl

from pipelines import hashing
from pipelines.reading import (
    RECORD_COLUMNS,
    CsvPending,
    RawFile,
    UnreadableFile,
    check_objects,
    finish_csv,
    split_records,
)
from pipelines.rules import Rules
from pipelines.schemas import (
    EVENT_COLUMNS,
    INGEST_FILE_COLUMNS,
    QUARANTINE_COLUMNS,
    REASON_CODES,
    OrderEvents,
    Quarantine,
    conform,
)
from pipelines.sources import bonifiq, brevo, esputnik
from pipelines.sources.common import extract, failures, item_flags, with_item_flags

SOURCE_MODULES: dict[str, ModuleType] = {"brevo": brevo, "bonifiq": bonifiq, "esputnik": esputnik}


@dataclass
class ParseResult:
    events: pl.DataFrame
    quarantine: pl.DataFrame
    files: pl.DataFrame
    errors: list[str]
    retried: int = 0
    readmitted: int = 0
    # Status updates held back as `unknown_order` (also in `quarantine`), as the events they would be: a caller
    # that reads more files in later batches admits those whose order arrived after all.
    held: pl.DataFrame | None = None


def _quarantine_rows(records: pl.DataFrame, code: pl.Expr, reason: pl.Expr) -> pl.DataFrame:
    return records.select(
        "rid",
        "source",
        "source_file",
        "record_locator",
        "record_index",
        "file_sha256",
        code.alias("reason_code"),
        reason.alias("reason"),
        "raw_record",
        pl.col("json_text").alias("record_json"),
    )


def parse_source(records: pl.DataFrame, module: ModuleType, rules: Rules) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Accepted events (keyed by `rid`) and quarantine rows for the records of one source."""
    spec = module.SPEC
    malformed = _quarantine_rows(
        records.filter(pl.col("json_text").is_null()),
        pl.lit("malformed_json"),
        pl.coalesce("parse_error", pl.lit("the record does not parse")),
    )
    fields, items = extract(records, spec)
    flags = item_flags(items, spec.name, spec.item_rules(rules))
    fields = with_item_flags(fields, flags, REASON_CODES)
    fields = module.prepare(fields, items, rules)
    fails = failures(fields, spec.name, spec.record_rules(rules))
    failed = (
        fields.select("rid")
        .with_row_index("index")
        .with_columns(pl.col("index").cast(pl.Int64))
        .join(fails, on="index")
    )
    rejected = _quarantine_rows(
        records.join(failed.select("rid", "reason_code", "reason"), on="rid"),
        pl.col("reason_code"),
        pl.col("reason"),
    )
    good = fields.join(failed.select("rid"), on="rid", how="anti")
    events = module.to_events(good, items.join(good.select("rid"), on="rid", how="semi"))
    return events, pl.concat([malformed, rejected], how="vertical_relaxed")


@dataclass
class ReadResult:
    """Every record of a batch of files (plus records to retry), in processing order, before validation."""

    records: pl.DataFrame
    file_rows: list[dict]
    errors: list[str]


def _with_file(frame: pl.DataFrame, order: int, sha256: str) -> pl.DataFrame:
    return frame.with_columns(pl.lit(order, pl.Int32).alias("file_order"), pl.lit(sha256).alias("file_sha256"))


def read_files(files: list[RawFile], retry: pl.DataFrame | None = None) -> ReadResult:
    """Split `files` (in processing order) into records, JSON texts checked; unreadable files are reported."""
    record_frames: list[pl.DataFrame | None] = []
    pending: list[tuple[int, CsvPending]] = []  # CSV files: JSON texts rebuilt together, one query per header
    file_rows: list[dict] = []
    errors: list[str] = []
    for order, file in enumerate(files):
        row = {
            "path": file.rel_path,
            "source": file.source,
            "sha256": file.sha256,
            "size_bytes": file.size_bytes,
            "error": None,
            "file_order": order,
        }
        try:
            frame = split_records(file)
        except UnreadableFile as exc:
            row["error"] = str(exc)
            errors.append(str(exc))
            frame = pl.DataFrame(schema=RECORD_COLUMNS)
        file_rows.append(row)
        if isinstance(frame, CsvPending):
            pending.append((order, frame))
            record_frames.append(None)
        else:
            record_frames.append(_with_file(frame, order, file.sha256))
    for (order, _), frame in zip(pending, finish_csv([p for _, p in pending]), strict=True):
        record_frames[order] = _with_file(frame, order, files[order].sha256)
    if retry is not None and retry.height:
        record_frames.append(
            retry.select(
                "source",
                "source_file",
                "record_locator",
                "record_index",
                "raw_record",
                pl.col("record_json").alias("json_text"),
                pl.lit(None, pl.String).alias("parse_error"),
                pl.lit(-1, pl.Int32).alias("file_order"),
                "file_sha256",
            )
        )
    schema = {**RECORD_COLUMNS, "file_order": pl.Int32, "file_sha256": pl.String}
    records = (
        pl.concat([f.select(list(schema)).cast(schema) for f in record_frames], how="vertical", rechunk=False)
        if record_frames
        else pl.DataFrame(schema=schema)
    )
    records = records.with_row_index("rid").with_columns(pl.col("rid").cast(pl.Int64))
    if records.height:
        records = check_objects(records, order_by="rid")
    return ReadResult(records=records, file_rows=file_rows, errors=errors)


def parse_files(
    files: list[RawFile],
    rules: Rules,
    *,
    run_id: str,
    ingested_at: datetime,
    document_salt: str,
    retry: pl.DataFrame | None = None,
    known_orders: pl.Series | None = None,
) -> ParseResult:
    """Parse and validate `files` (in processing order); nothing read is lost.

    `retry` holds quarantined `unknown_order` records (quarantine rows) to try again now that more orders may
    have arrived; `known_orders` are the order ids that already have a full order in the warehouse. A status
    update whose order is in neither the warehouse nor this batch is quarantined as `unknown_order`.
    """
    read = read_files(files, retry)
    return validate_records(
        read,
        rules,
        run_id=run_id,
        ingested_at=ingested_at,
        document_salt=document_salt,
        retry=retry,
        known_orders=known_orders,
    )


def validate_records(
    read: ReadResult,
    rules: Rules,
    *,
    run_id: str,
    ingested_at: datetime,
    document_salt: str,
    retry: pl.DataFrame | None = None,
    known_orders: pl.Series | None = None,
) -> ParseResult:
    """Field extraction and the sources' quarantine rules over records read by `read_files`."""
    records, file_rows, errors = read.records, read.file_rows, read.errors
    event_frames, quarantine_frames = [], []
    for source, module in SOURCE_MODULES.items():
        of_source = records.filter(pl.col("source") == source)
        if of_source.height == 0:
            continue
        events, quarantined = parse_source(of_source, module, rules)
        event_frames.append(events)
        quarantine_frames.append(quarantined)

    keys = records.select("rid", "source", "source_file", "record_locator", "record_index", "file_sha256")
    events = _finish_events(event_frames, keys, run_id, ingested_at, document_salt)
    events, orphans, held = _split_orphans(events, records, known_orders)
    quarantine = _finish_quarantine([*quarantine_frames, orphans], run_id, ingested_at)

    counted = records.filter(pl.col("file_order") >= 0)
    counts = counted.group_by("file_order").agg(pl.len().alias("records_read"))
    by_file = counted.select("rid", "file_order")
    accepted = events.join(by_file, on="rid").group_by("file_order").agg(pl.len().alias("records_accepted"))
    rejected = quarantine.join(by_file, on="rid").group_by("file_order").agg(pl.len().alias("records_quarantined"))
    file_frame = (
        pl.DataFrame(
            file_rows,
            schema={
                "path": pl.String,
                "source": pl.String,
                "sha256": pl.String,
                "size_bytes": pl.Int64,
                "error": pl.String,
                "file_order": pl.Int32,
            },
        )
        .join(counts, on="file_order", how="left")
        .join(accepted, on="file_order", how="left")
        .join(rejected, on="file_order", how="left")
        .with_columns(
            pl.col("records_read", "records_accepted", "records_quarantined").fill_null(0).cast(pl.Int64),
            pl.lit(ingested_at).alias("first_ingested_at"),
            pl.lit(ingested_at).alias("last_ingested_at"),
        )
        .sort("file_order")
    )
    return ParseResult(
        events=conform(events, EVENT_COLUMNS),
        quarantine=conform(quarantine, QUARANTINE_COLUMNS),
        files=conform(file_frame, INGEST_FILE_COLUMNS),
        errors=errors,
        retried=0 if retry is None else retry.height,
        readmitted=events.join(records.filter(pl.col("file_order") < 0).select("rid"), on="rid").height,
        held=conform(held, EVENT_COLUMNS),
    )


def _split_orphans(
    events: pl.DataFrame, records: pl.DataFrame, known_orders: pl.Series | None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Hold back status updates for orders that never arrived (decided once all files are read).

    Returns the events admitted, the quarantine rows of those held back, and the held-back events themselves.
    """
    update = pl.col("record_kind") == "update"
    full_orders = events.filter(pl.col("record_kind") == "order")["order_id"]
    missing = events.filter(update & ~pl.col("order_id").is_in(full_orders.implode()))["order_id"].unique()
    if known_orders is not None and known_orders.len() and missing.len():
        missing = missing.filter(~missing.is_in(present(missing, known_orders).implode()))
    orphan = update & pl.col("order_id").is_in(missing.implode())
    orphans = events.filter(orphan).select("rid", "order_id")
    quarantined = _quarantine_rows(
        records.join(orphans, on="rid"),
        pl.lit("unknown_order"),
        pl.format("status update for order {} that never arrived", pl.col("order_id")),
    )
    return events.filter(~orphan), quarantined, events.filter(orphan)


def present(ids: pl.Series, known: pl.Series) -> pl.Series:
    """The values of `known` that are among `ids`. Only `ids` (a batch's few) are hashed into a set and `known`
    (every order so far, millions) probes it: the other way round costs a set of every known order per batch,
    which grows with the history (4.8 s a batch at 10M orders)."""
    return known.filter(known.is_in(ids.unique().implode()))


def _finish_events(
    frames: list[pl.DataFrame],
    keys: pl.DataFrame,
    run_id: str,
    ingested_at: datetime,
    salt: str,
) -> pl.DataFrame:
    if not frames:
        return conform(pl.DataFrame(), {"rid": pl.Int64, **EVENT_COLUMNS})
    events = pl.concat(
        [
            f.drop([c for c in ("source", "source_file", "record_locator", "record_index") if c in f.columns])
            for f in frames
        ],
        how="diagonal_relaxed",
    )
    events = events.join(keys, on="rid", how="left").sort("rid")
    events = events.with_columns(
        pl.concat_str(pl.col("source"), pl.lit(":"), pl.col("source_order_id")).alias("order_id"),
        pl.lit(run_id).alias("run_id"),
        pl.lit(ingested_at).alias("ingested_at"),
    )
    # Ids: an event is one record of one file version; a document is stored only as a salted hash.
    events = hashing.sha256_column(
        events,
        pl.concat_str(
            pl.col("source_file"),
            pl.lit(":"),
            pl.col("file_sha256"),
            pl.lit(":"),
            pl.col("record_index").cast(pl.String),
        ),
        "event_id",
        prefix="e_",
        length=24,
    )
    if "document_plain" in events.columns:
        events = hashing.sha256_column(
            events,
            pl.when(pl.col("document_plain").str.len_chars() > 0).then(pl.lit(salt) + pl.col("document_plain")),
            "document_hash",
            prefix="d_",
            length=32,
        )
    events = conform(events, {"rid": pl.Int64, **EVENT_COLUMNS})
    OrderEvents.validate(events, lazy=True)
    return events


def _finish_quarantine(frames: list[pl.DataFrame], run_id: str, ingested_at: datetime) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    if not frames:
        return conform(pl.DataFrame(), {"rid": pl.Int64, **QUARANTINE_COLUMNS})
    quarantine = (
        pl.concat(frames, how="vertical_relaxed")
        .sort("rid")
        .with_columns(pl.lit(run_id).alias("run_id"), pl.lit(ingested_at).alias("ingested_at"))
    )
    quarantine = conform(quarantine, {"rid": pl.Int64, **QUARANTINE_COLUMNS})
    Quarantine.validate(quarantine, lazy=True)
    return quarantine
