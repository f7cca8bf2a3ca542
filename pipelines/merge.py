"""Merging the accepted records of each order into its latest state (SPEC §3 merge rules).

- Records of one order are taken in processing order: file path, then position in the file; where the record
  carries its own update time (BonifiQ `LastUpdate`), that time first.
- Later non-null fields win: a record patches the order and never blanks a field it does not carry.
- Status is monotonic over `abandoned < pending < delivered < cancelled`; `source_status` is the source's own
  word for the status the order ends in.
- `placed_at` is the earliest placement time seen: an eSputnik re-send's `date` is the time of its new status,
  and a re-send may arrive in a file processed before the original's.
- Items come from the latest record that carried an item list.
- A re-sent identical record (same content, whatever file it came in) is applied once: it stays in
  `core.order_events` as the record of its arrival, but changes no order.
"""

from __future__ import annotations

import polars as pl

from pipelines.rules import Rules
from pipelines.schemas import MONEY, ORDER_COLUMNS, ORDER_FIELDS, ORDER_ITEM_COLUMNS, STATUS_RANK, conform

_FIRST_WINS = {"placed_at"}
# Where a record came from, not what it says: ignored when telling whether two records are the same.
PROVENANCE = ["event_id", "source_file", "record_locator", "record_index", "file_sha256", "run_id", "ingested_at"]
_SPECIAL = {"order_id", "status", "source_status", "source_file"} | _FIRST_WINS


def processing_order(events: pl.DataFrame | pl.LazyFrame):
    """Events sorted the way their records are applied."""
    return events.sort(["order_id", "sort_time", "source_file", "ingested_at", "record_index"], nulls_last=False)


def merge_orders(events: pl.DataFrame, rules: Rules) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(orders, order_items) from every accepted event; `customer_id` is added by identity resolution."""
    content = [c for c in events.columns if c not in PROVENANCE]
    ordered = (
        processing_order(events.lazy())
        .filter(pl.struct(content).is_first_distinct())
        .with_columns(
            pl.col("status").replace_strict(STATUS_RANK, default=None, return_dtype=pl.Int8).alias("status_rank")
        )
    )
    patched = [pl.col(name).drop_nulls().last().alias(name) for name in ORDER_FIELDS if name not in _SPECIAL]
    final_rank = pl.col("status_rank").max()
    merged = ordered.group_by("order_id").agg(
        *patched,
        pl.col("placed_at").min().alias("placed_at"),
        final_rank.alias("status_rank"),
        pl.col("source_status").filter(pl.col("status_rank") == final_rank).drop_nulls().last().alias("source_status"),
        pl.col("source_file").last().alias("source_file"),
        pl.col("items").drop_nulls().last().alias("items"),
        pl.len().alias("event_count"),
        (pl.col("record_kind") == "order").any().alias("has_full_order"),
    )
    rank_to_status = {rank: status for status, rank in STATUS_RANK.items()}
    fx = pl.DataFrame(
        {"currency": list(rules.fx_rates), "fx_rate": [str(v) for v in rules.fx_rates.values()]}
    ).with_columns(pl.col("fx_rate").str.to_decimal(scale=6))
    merged = (
        merged.with_columns(
            pl.col("status_rank").replace_strict(rank_to_status, return_dtype=pl.String).alias("status"),
            pl.col("items").list.len().fill_null(0).cast(pl.Int64).alias("item_count"),
        )
        .join(fx.lazy(), on="currency", how="left")
        .with_columns(
            _round_half_up_cents(pl.col("net_amount").cast(pl.Decimal(24, 2)) * pl.col("fx_rate")).alias(
                "net_amount_reporting"
            )
        )
        .collect()
    )
    items = merged.select("order_id", "items").explode("items").drop_nulls("items").unnest("items")
    orders = conform(merged.sort("order_id"), ORDER_COLUMNS | {"has_full_order": pl.Boolean})
    return orders, conform(items.sort("order_id", "line_number"), ORDER_ITEM_COLUMNS)


def _round_half_up_cents(value: pl.Expr) -> pl.Expr:
    """Round a non-negative decimal half-up to cents, exactly (no binary floats)."""
    scaled = value * 100
    whole = scaled.cast(pl.Decimal(30, 0), strict=False)  # Polars rounds half to even here
    # an exact half that went down to even goes up instead; anything else is already rounded right
    cents = pl.when(scaled - whole >= pl.lit(0.5).cast(pl.Decimal(4, 1))).then(whole + 1).otherwise(whole)
    return (cents.cast(pl.Decimal(30, 2)) / 100).cast(MONEY)
