"""Canonical tables of SPEC §3 as pandera models, one per table.

These are the contract of schema `core`: every frame is validated (collected, `lazy=True`) before it is
written, so a bug in a parser shows up as a failed validation naming every bad row, not as a wrong mart.
"""

from __future__ import annotations

from typing import Annotated

import pandera.polars as pa
import polars as pl

MONEY = pl.Decimal(18, 2)
Money = Annotated[pl.Decimal, 18, 2]  # DECIMAL(18,2) in pandera models
TS = pl.Datetime("us")
STATUS_RANK = {"abandoned": 0, "pending": 1, "delivered": 2, "cancelled": 3}
SOURCES = ["brevo", "bonifiq", "esputnik"]

# Quarantine reason codes in the order they are tested (SPEC §4): a record gets the first that applies.
REASON_CODES = [
    "malformed_json",
    "missing_required_field",
    "invalid_type",
    "invalid_timestamp",
    "missing_contact",
    "inconsistent_state",
    "unknown_status",
    "negative_amount",
    "invalid_quantity",
    "unknown_currency",
    "unknown_order",
]

ITEM_STRUCT = pl.Struct(
    {
        "line_number": pl.Int32,
        "product_id": pl.String,
        "sku": pl.String,
        "name": pl.String,
        "variant": pl.String,
        "categories": pl.List(pl.String),
        "brand": pl.String,
        "quantity": pl.Int64,
        "unit_price": MONEY,
        "line_amount": MONEY,
        "reported_points": pl.Int64,
        "reported_multiplier": pl.Float64,
    }
)

# Columns shared by an accepted record (core.order_events) and an order's merged state (core.orders).
ORDER_FIELDS: dict[str, pl.DataType] = {
    "order_id": pl.String,
    "source": pl.String,
    "source_order_id": pl.String,
    "status": pl.String,
    "source_status": pl.String,
    "placed_at": TS,
    "delivered_at": TS,
    "cancelled_at": TS,
    "currency": pl.String,
    "gross_amount": MONEY,
    "shipping_amount": MONEY,
    "tax_amount": MONEY,
    "discount_amount": MONEY,
    "net_amount": MONEY,
    "coupon_code": pl.String,
    "coupon_discount": MONEY,
    "campaign": pl.String,
    "channel": pl.String,
    "referrer": pl.String,
    "payment_method": pl.String,
    "payment_status": pl.String,
    "branch": pl.String,
    "sales_person": pl.String,
    "is_subscription": pl.Boolean,
    "subscription_id": pl.String,
    "is_referral_order": pl.Boolean,
    "loyalty_id": pl.String,
    "tracking_number": pl.String,
    "carrier": pl.String,
    # source-reported loyalty figures, kept for reconciliation (SPEC §5.6)
    "reported_points_earned": pl.Int64,
    "reported_points_awarded": pl.Int64,
    "reported_points_multiplier": pl.Float64,
    "reported_tier_before": pl.String,
    "reported_tier_after": pl.String,
    "reported_points_balance": pl.Int64,
    # granted source bonuses (SPEC §5.3): bonus name -> points
    "birthday_bonus": pl.Int64,
    "referral_bonus": pl.Int64,
    "subscription_bonus": pl.Int64,
    "bonus_points": pl.Int64,
    "review_incentive": pl.Int64,
    "review_incentive_expiry": pl.String,
    "updated_at": TS,
    "source_file": pl.String,
}

# Contact fields an accepted record carries; identity resolution (identity.py) turns them into customers.
CONTACT_FIELDS: dict[str, pl.DataType] = {
    "email": pl.String,
    "phone": pl.String,
    "first_name": pl.String,
    "last_name": pl.String,
    "source_customer_id": pl.String,
    "document_hash": pl.String,
}

EVENT_COLUMNS: dict[str, pl.DataType] = {
    "event_id": pl.String,
    "record_kind": pl.String,  # 'order' (a full order) or 'update' (a partial status update)
    **ORDER_FIELDS,
    **CONTACT_FIELDS,
    "items": pl.List(ITEM_STRUCT),  # null when the record carries no item list
    "sort_time": TS,  # the record's own update time where it has one (BonifiQ LastUpdate)
    "record_locator": pl.String,
    "record_index": pl.Int64,
    "file_sha256": pl.String,
    "run_id": pl.String,
    "ingested_at": TS,
}

ORDER_COLUMNS: dict[str, pl.DataType] = {
    "order_id": pl.String,
    "customer_id": pl.String,
    **{k: v for k, v in ORDER_FIELDS.items() if k != "order_id"},
    "net_amount_reporting": MONEY,
    "item_count": pl.Int64,
    "event_count": pl.Int64,
}

ORDER_ITEM_COLUMNS: dict[str, pl.DataType] = {
    "order_id": pl.String,
    "line_number": pl.Int32,
    "product_id": pl.String,
    "sku": pl.String,
    "name": pl.String,
    "variant": pl.String,
    "categories": pl.List(pl.String),
    "brand": pl.String,
    "quantity": pl.Int64,
    "unit_price": MONEY,
    "line_amount": MONEY,
    "reported_points": pl.Int64,
    "reported_multiplier": pl.Float64,
}

CUSTOMER_COLUMNS: dict[str, pl.DataType] = {
    "customer_id": pl.String,
    "email": pl.String,
    "phone": pl.String,
    "first_name": pl.String,
    "last_name": pl.String,
    "document_hash": pl.String,
    "first_seen_at": TS,
    "sources": pl.List(pl.String),
    "source_customer_ids": pl.List(pl.String),
}

QUARANTINE_COLUMNS: dict[str, pl.DataType] = {
    "source": pl.String,
    "source_file": pl.String,
    "record_locator": pl.String,
    "record_index": pl.Int64,
    "file_sha256": pl.String,
    "reason_code": pl.String,
    "reason": pl.String,
    "raw_record": pl.String,
    "record_json": pl.String,  # the record as one JSON object (CSV rows rebuilt), null when it did not parse
    "ingested_at": TS,
    "run_id": pl.String,
}

INGEST_FILE_COLUMNS: dict[str, pl.DataType] = {
    "path": pl.String,
    "source": pl.String,
    "sha256": pl.String,
    "size_bytes": pl.Int64,
    "records_read": pl.Int64,
    "records_accepted": pl.Int64,
    "records_quarantined": pl.Int64,
    "error": pl.String,
    "first_ingested_at": TS,
    "last_ingested_at": TS,
}


def empty_frame(columns: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=columns)


def conform(frame: pl.DataFrame, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select `columns` in order, adding missing ones as nulls and casting to the canonical types."""
    if not frame.columns:
        return empty_frame(columns)
    return frame.select(
        [
            (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in columns.items()
        ]
    )


_STATUSES = list(STATUS_RANK)


class OrderEvents(pa.DataFrameModel):
    """core.order_events: every accepted record, in processing order."""

    event_id: str = pa.Field(unique=True)
    record_kind: str = pa.Field(isin=["order", "update"])
    order_id: str
    source: str = pa.Field(isin=SOURCES)
    source_order_id: str = pa.Field(str_length={"min_value": 1})
    status: str = pa.Field(nullable=True, isin=_STATUSES)
    net_amount: Money = pa.Field(nullable=True, ge=0)
    currency: str = pa.Field(nullable=True)

    @pa.dataframe_check(name="order_id_is_source_and_id")
    def _order_id_composed(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("order_id") == pl.concat_str(pl.col("source"), pl.lit(":"), pl.col("source_order_id"))
        )

    @pa.dataframe_check(name="full_orders_have_status_and_currency")
    def _full_orders_complete(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("record_kind") == "update") | (pl.col("status").is_not_null() & pl.col("currency").is_not_null())
        )

    class Config:
        strict = False
        coerce = False


class Orders(pa.DataFrameModel):
    """core.orders: one row per order, its latest merged state."""

    order_id: str = pa.Field(unique=True)
    customer_id: str
    source: str = pa.Field(isin=SOURCES)
    status: str = pa.Field(isin=_STATUSES)
    currency: str
    net_amount: Money = pa.Field(nullable=True, ge=0)
    net_amount_reporting: Money = pa.Field(nullable=True, ge=0)

    @pa.dataframe_check(name="delivered_orders_have_delivered_at")
    def _delivered_dated(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("status") != "delivered") | pl.col("delivered_at").is_not_null())

    @pa.dataframe_check(name="cancelled_orders_have_cancelled_at")
    def _cancelled_dated(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("status") != "cancelled") | pl.col("cancelled_at").is_not_null())

    class Config:
        strict = False


class OrderItems(pa.DataFrameModel):
    """core.order_items: one row per order line."""

    order_id: str
    line_number: pl.Int32 = pa.Field(ge=1)
    quantity: int = pa.Field(gt=0)
    unit_price: Money = pa.Field(nullable=True, ge=0)

    @pa.dataframe_check(name="order_line_unique")
    def _line_unique(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(~pl.struct("order_id", "line_number").is_duplicated())

    class Config:
        strict = False


class Customers(pa.DataFrameModel):
    """core.customers: one row per resolved customer (PII lives here)."""

    customer_id: str = pa.Field(unique=True)

    @pa.dataframe_check(name="customer_is_identifiable")
    def _identifiable(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.any_horizontal(
                pl.col("email").is_not_null(),
                pl.col("phone").is_not_null(),
                pl.col("document_hash").is_not_null(),
                pl.col("source_customer_ids").list.len() > 0,
            )
        )

    class Config:
        strict = False


class Quarantine(pa.DataFrameModel):
    """core.quarantine: every rejected record with its reason and its raw text verbatim."""

    source: str = pa.Field(isin=SOURCES)
    source_file: str
    record_locator: str
    reason_code: str = pa.Field(isin=REASON_CODES)
    reason: str
    raw_record: str

    class Config:
        strict = False


class IngestFiles(pa.DataFrameModel):
    """core.ingest_files: one row per file seen, with its conservation counts."""

    path: str
    sha256: str = pa.Field(str_length=64)
    records_read: int = pa.Field(ge=0)
    records_accepted: int = pa.Field(ge=0)
    records_quarantined: int = pa.Field(ge=0)

    @pa.dataframe_check(name="conservation")
    def _conservation(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("records_read") == pl.col("records_accepted") + pl.col("records_quarantined")
        )

    class Config:
        strict = False
