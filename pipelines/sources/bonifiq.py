"""BonifiQ purchase orders (SPEC §2.2), PascalCase "Purchase Order Model".

The state comes from the flags, not from `OrderStatus` (free text, informational): `IsCancelledOrReturned` →
cancelled, else `IsCompleted` → delivered, else pending. The seed's own rules are hard validation rules.
`OrderTotal` is already net of shipping, taxes and discounts: it IS the points base. Records of one order are
ordered by `LastUpdate`, not by file position.
"""

from __future__ import annotations

import polars as pl

from pipelines.rules import Rules
from pipelines.sources.common import (
    Field,
    Rule,
    SourceSpec,
    currency_rule,
    items_rule,
    items_struct,
    labels_of,
    line_amount,
    line_overflows,
    money_nonnegative,
    nested_text,
    normalize_email,
    normalize_phone,
    quantity_rule,
    required_rule,
    timestamp_rule,
    type_rule,
)

NAME = "bonifiq"

FIELDS = [
    Field("original_id", "$.OriginalId"),
    Field("placed", "$.OrderPlacementDate", "ts"),
    Field("completed", "$.OrderCompletedDate", "ts"),
    Field("cancelled", "$.OrderCancelledDate", "ts"),
    Field("order_status", "$.OrderStatus"),
    Field("is_completed", "$.IsCompleted", "bool"),
    Field("is_cancelled", "$.IsCancelledOrReturned", "bool"),
    Field("order_total", "$.OrderTotal", "money"),
    Field("customer_original_id", "$.Customer.OriginalId"),
    Field("customer_name", "$.Customer.Name"),
    Field("customer_email", "$.Customer.Email"),
    Field("customer_phone", "$.Customer.Phone"),
    Field("coupon", "$.Coupon"),
    Field("metadatas", "$.Metadatas", "json"),
    Field("payment_method", "$.PaymentMethod"),
    Field("branch", "$.Branch"),
    Field("sales_person", "$.SalesPerson"),
    Field("last_update", "$.LastUpdate", "ts"),
    Field("currency", "$.Currency"),
]

ITEM_FIELDS = [
    Field("original_id", "$.OriginalId"),
    Field("name", "$.Name"),
    Field("quantity", "$.Quantity", "float"),
    Field("price", "$.Price", "money"),
    Field("category", "$.Category", "list_str"),
]

_DATES = ["placed", "completed", "cancelled", "last_update"]
LABELS = labels_of(FIELDS)  # reason texts name fields as the source spells them, e.g. OrderPlacementDate


def record_rules(rules: Rules) -> list[Rule]:
    completed = pl.col("is_completed").fill_null(False)
    cancelled = pl.col("is_cancelled").fill_null(False)
    has_completed = pl.col("completed__text").is_not_null()
    has_cancelled = pl.col("cancelled__text").is_not_null()
    return [
        required_rule(
            {
                "OriginalId": pl.col("original_id").is_not_null(),
                "OrderPlacementDate": pl.col("placed__text").is_not_null(),
                "OrderTotal": pl.col("order_total__text").is_not_null(),
            }
        ),
        Rule(
            "invalid_type",
            type_rule(["order_total", "is_completed", "is_cancelled"]).ok
            & ~(pl.col("items__type").is_not_null() & (pl.col("items__type") != "ARRAY"))
            & ~pl.col("item__invalid_type").fill_null(False)
            & ~nested_text(FIELDS)[0],
            pl.coalesce(
                nested_text(FIELDS)[1],
                pl.col("item__invalid_type__reason"),
                pl.when(pl.col("items__type").is_not_null() & (pl.col("items__type") != "ARRAY")).then(
                    pl.lit("Products is not a list")
                ),
                type_rule(
                    ["order_total", "is_completed", "is_cancelled"],
                    {
                        "order_total": "OrderTotal",
                        "is_completed": "IsCompleted",
                        "is_cancelled": "IsCancelledOrReturned",
                    },
                ).reason,
            ),
        ),
        timestamp_rule(_DATES, labels=LABELS),
        Rule(
            "missing_contact",
            pl.any_horizontal(
                pl.col("customer_original_id").is_not_null(),
                pl.col("customer_email").is_not_null(),
                pl.col("customer_phone").is_not_null(),
            ),
            pl.lit("no Customer.OriginalId, Email or Phone: the buyer cannot be identified"),
        ),
        Rule(
            "inconsistent_state",
            ~(
                (completed & ~has_completed)
                | (cancelled & ~has_cancelled)
                | (cancelled & completed)
                | (~completed & has_completed)
                | (~cancelled & has_cancelled)
            ),
            pl.when(completed & ~has_completed)
            .then(pl.lit("IsCompleted is true but OrderCompletedDate is empty"))
            .when(cancelled & ~has_cancelled)
            .then(pl.lit("IsCancelledOrReturned is true but OrderCancelledDate is empty"))
            .when(cancelled & completed)
            .then(pl.lit("IsCancelledOrReturned is true but IsCompleted is not false"))
            .when(~completed & has_completed)
            .then(pl.lit("OrderCompletedDate is given but IsCompleted is not true"))
            .otherwise(pl.lit("OrderCancelledDate is given but IsCancelledOrReturned is not true")),
        ),
        Rule(
            "negative_amount",
            money_nonnegative(["order_total"]).ok & ~pl.col("item__negative_amount").fill_null(False),
            pl.coalesce(pl.col("item__negative_amount__reason"), pl.lit("OrderTotal is below zero")),
        ),
        items_rule("invalid_quantity", "quantity"),
        currency_rule(list(rules.fx_rates), "currency_final"),
    ]


def item_rules(rules: Rules) -> list[Rule]:
    return [
        Rule(
            "invalid_type",
            (pl.col("item__type") == "OBJECT")
            & ~(pl.col("quantity__text").is_not_null() & pl.col("quantity").is_null())
            & ~(pl.col("price__text").is_not_null() & pl.col("price").is_null())
            & ~line_overflows("quantity", "price"),
            pl.when(pl.col("item__type") != "OBJECT")
            .then(pl.lit("is not an object"))
            .when(line_overflows("quantity", "price"))
            .then(
                pl.format(
                    "Price {} × Quantity {} is too large for an amount", pl.col("price"), pl.col("quantity__text")
                )
            )
            .when(pl.col("quantity__text").is_not_null() & pl.col("quantity").is_null())
            .then(pl.format("Quantity {} is not a number", pl.col("quantity__text")))
            .otherwise(pl.format("Price {} is not a number", pl.col("price__text"))),
        ),
        Rule(
            "negative_amount", pl.col("price").fill_null(0) >= 0, pl.format("Price {} is below zero", pl.col("price"))
        ),
        quantity_rule(),
    ]


def prepare(fields: pl.DataFrame, items: pl.DataFrame, rules: Rules) -> pl.DataFrame:
    return fields.with_columns(
        pl.coalesce(pl.col("currency").str.to_uppercase(), pl.lit(rules.default_currency[NAME])).alias("currency_final")
    )


def _metadata(key: str) -> pl.Expr:
    """A value of the Metadatas key–value list, looked up by key (case-insensitive)."""
    return pl.col("metadatas").str.extract(r'(?i)\{[^{}]*"Key"\s*:\s*"' + key + r'"[^{}]*"Value"\s*:\s*"([^"]*)"', 1)


def to_events(good: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    completed = pl.col("is_completed").fill_null(False)
    cancelled = pl.col("is_cancelled").fill_null(False)
    status = (
        pl.when(cancelled)
        .then(pl.lit("cancelled"))
        .when(completed)
        .then(pl.lit("delivered"))
        .otherwise(pl.lit("pending"))
    )
    owner = pl.col("customer_original_id")
    owner_is_email = owner.str.contains("@").fill_null(False)
    document = pl.when(owner.is_not_null() & ~owner_is_email).then(owner.str.replace_all(r"\D", ""))
    name = pl.col("customer_name").str.strip_chars()
    item_frame = items_struct(
        items,
        {
            "line_number": pl.col("line_number"),
            "product_id": pl.col("original_id"),
            "name": pl.col("name"),
            "categories": pl.col("category"),
            "quantity": pl.col("quantity").cast(pl.Int64),
            "unit_price": pl.col("price"),
            "line_amount": line_amount("quantity", "price"),
        },
    )
    events = good.with_columns(
        pl.lit("order").alias("record_kind"),
        pl.col("original_id").alias("source_order_id"),
        status.alias("status"),
        pl.col("order_status").alias("source_status"),
        pl.col("placed").alias("placed_at"),
        pl.col("completed").alias("delivered_at"),
        pl.col("cancelled").alias("cancelled_at"),
        pl.col("currency_final").alias("currency"),
        pl.col("order_total").alias("gross_amount"),
        pl.col("order_total").alias("net_amount"),
        pl.col("coupon").alias("coupon_code"),
        pl.coalesce(_metadata("campaign"), _metadata("utm_campaign")).alias("campaign"),
        pl.coalesce(_metadata("channel"), pl.when(pl.col("branch").is_not_null()).then(pl.lit("store"))).alias(
            "channel"
        ),
        pl.col("sales_person"),
        pl.coalesce("last_update", "cancelled", "completed", "placed").alias("updated_at"),
        pl.coalesce(
            normalize_email(pl.col("customer_email")), normalize_email(pl.when(owner_is_email).then(owner))
        ).alias("email"),
        normalize_phone(pl.col("customer_phone")).alias("phone"),
        name.str.split(" ").list.first().alias("first_name"),
        pl.when(name.str.contains(" ")).then(name.str.replace(r"^\S+\s+", "")).alias("last_name"),
        # A document (CPF/CNPJ) is never an id in the clear: it is kept only as a salted hash (see ingest.py).
        pl.when(owner_is_email).then(owner.str.strip_chars().str.to_lowercase()).alias("source_customer_id"),
        document.alias("document_plain"),
        pl.col("last_update").alias("sort_time"),
    )
    return events.join(item_frame, on="rid", how="left")


SPEC = SourceSpec(
    name=NAME,
    fields=FIELDS,
    items_path="$.Products",
    item_fields=ITEM_FIELDS,
    record_rules=record_rules,
    item_rules=item_rules,
)
