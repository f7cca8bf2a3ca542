"""eSputnik "Add orders" records (SPEC §2.3): whole orders, re-sent with the same externalOrderId to update.

eSputnik sends no separate event time: the `date` of the record carrying a status is when that status happened.
"""

from __future__ import annotations

import polars as pl

from pipelines.rules import Rules
from pipelines.schemas import MONEY
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
    status_rule,
    timestamp_rule,
    type_rule,
)

NAME = "esputnik"

STATUS_MAP = {
    "INITIALIZED": "pending",
    "IN_PROGRESS": "pending",
    "DELIVERED": "delivered",
    "CANCELLED": "cancelled",
    "ABANDONED_SHOPPING_CART": "abandoned",
}

FIELDS = [
    Field("external_order_id", "$.externalOrderId"),
    Field("external_customer_id", "$.externalCustomerId"),
    Field("total_cost", "$.totalCost", "money"),
    Field("status", "$.status"),
    Field("date", "$.date", "ts"),
    Field("email", "$.email"),
    Field("phone", "$.phone"),
    Field("first_name", "$.firstName"),
    Field("last_name", "$.lastName"),
    Field("currency", "$.currency"),
    Field("shipping", "$.shipping", "money"),
    Field("discount", "$.discount", "money"),
    Field("delivery_method", "$.deliveryMethod"),
    Field("payment_method", "$.paymentMethod"),
    Field("delivery_address", "$.deliveryAddress"),
]

ITEM_FIELDS = [
    Field("external_item_id", "$.externalItemId"),
    Field("name", "$.name"),
    Field("category", "$.category", "list_str"),
    Field("quantity", "$.quantity", "float"),
    Field("cost", "$.cost", "money"),
    Field("url", "$.url"),
    Field("image_url", "$.imageUrl"),
    Field("description", "$.description"),
]

_ITEM_REQUIRED = ["external_item_id", "name", "quantity__text", "cost__text", "url", "image_url"]
_ITEM_LABELS = {
    "quantity__text": "quantity",
    "cost__text": "cost",
    "external_item_id": "externalItemId",
    "image_url": "imageUrl",
}


LABELS = labels_of(FIELDS)  # reason texts name fields as the source spells them, e.g. totalCost


def net_amount() -> pl.Expr:
    """totalCost already has the discount taken off: net = totalCost − shipping."""
    return (pl.col("total_cost") - pl.col("shipping").fill_null(0)).cast(MONEY, strict=False)


def _required() -> Rule:
    return required_rule(
        {
            "externalOrderId": pl.col("external_order_id").is_not_null(),
            "externalCustomerId": pl.col("external_customer_id").is_not_null(),
            "totalCost": pl.col("total_cost__text").is_not_null(),
            "status": pl.col("status").is_not_null(),
            "date": pl.col("date__text").is_not_null(),
        }
    )


def record_rules(rules: Rules) -> list[Rule]:
    return [
        Rule(
            "missing_required_field",
            _required().ok & ~pl.col("item__missing_required_field").fill_null(False),
            pl.coalesce(pl.col("item__missing_required_field__reason"), _required().reason),
        ),
        Rule(
            "invalid_type",
            type_rule(["total_cost", "shipping", "discount"]).ok
            & ~(pl.col("items__type").is_not_null() & (pl.col("items__type") != "ARRAY"))
            & ~pl.col("item__invalid_type").fill_null(False)
            & ~nested_text(FIELDS)[0],
            pl.coalesce(
                nested_text(FIELDS)[1],
                pl.col("item__invalid_type__reason"),
                pl.when(pl.col("items__type").is_not_null() & (pl.col("items__type") != "ARRAY")).then(
                    pl.lit("items is not a list")
                ),
                type_rule(["total_cost", "shipping", "discount"], LABELS).reason,
            ),
        ),
        timestamp_rule(["date"], offset_required=["date"]),
        Rule(
            "missing_contact",
            pl.col("email").is_not_null() | pl.col("phone").is_not_null(),
            pl.lit("neither email nor phone: the buyer cannot be reached"),
        ),
        status_rule(list(STATUS_MAP)),
        Rule(
            "negative_amount",
            money_nonnegative(["total_cost", "shipping", "discount"]).ok
            & (pl.col("net").fill_null(0) >= 0)
            & ~pl.col("item__negative_amount").fill_null(False),
            # the field the source gave below zero first, then an item, then the derived net amount
            pl.coalesce(
                money_nonnegative(["total_cost", "shipping", "discount"], LABELS).reason,
                pl.col("item__negative_amount__reason"),
                pl.when(pl.col("net").fill_null(0) < 0).then(
                    pl.format("net amount (totalCost − shipping) {} is below zero", pl.col("net"))
                ),
            ),
        ),
        items_rule("invalid_quantity", "quantity"),
        currency_rule(list(rules.fx_rates), "currency_final"),
    ]


def item_rules(rules: Rules) -> list[Rule]:
    missing = pl.lit(None, dtype=pl.String)
    for name in reversed(_ITEM_REQUIRED):
        missing = pl.when(pl.col(name).is_null()).then(pl.lit(_ITEM_LABELS.get(name, name))).otherwise(missing)
    return [
        Rule(
            "missing_required_field",
            (pl.col("item__type") != "OBJECT") | pl.all_horizontal([pl.col(n).is_not_null() for n in _ITEM_REQUIRED]),
            pl.format("required field {} is missing or empty", missing),
        ),
        Rule(
            "invalid_type",
            (pl.col("item__type") == "OBJECT")
            & ~(pl.col("quantity__text").is_not_null() & pl.col("quantity").is_null())
            & ~(pl.col("cost__text").is_not_null() & pl.col("cost").is_null())
            & ~line_overflows("quantity", "cost"),
            pl.when(pl.col("item__type") != "OBJECT")
            .then(pl.lit("is not an object"))
            .when(line_overflows("quantity", "cost"))
            .then(
                pl.format("cost {} × quantity {} is too large for an amount", pl.col("cost"), pl.col("quantity__text"))
            )
            .when(pl.col("quantity__text").is_not_null() & pl.col("quantity").is_null())
            .then(pl.format("quantity {} is not a number", pl.col("quantity__text")))
            .otherwise(pl.format("cost {} is not a number", pl.col("cost__text"))),
        ),
        Rule("negative_amount", pl.col("cost").fill_null(0) >= 0, pl.format("cost {} is below zero", pl.col("cost"))),
        quantity_rule(),
    ]


def prepare(fields: pl.DataFrame, items: pl.DataFrame, rules: Rules) -> pl.DataFrame:
    return fields.with_columns(
        net_amount().alias("net"),
        pl.coalesce(pl.col("currency").str.to_uppercase(), pl.lit(rules.default_currency[NAME])).alias(
            "currency_final"
        ),
    )


def to_events(good: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    status = pl.col("status").str.to_uppercase().replace_strict(STATUS_MAP, default=None)
    item_frame = items_struct(
        items,
        {
            "line_number": pl.col("line_number"),
            "product_id": pl.col("external_item_id"),
            "name": pl.col("name"),
            "categories": pl.col("category"),
            "quantity": pl.col("quantity").cast(pl.Int64),
            "unit_price": pl.col("cost"),
            "line_amount": line_amount("quantity", "cost"),
        },
    )
    events = good.with_columns(
        pl.lit("order").alias("record_kind"),
        pl.col("external_order_id").alias("source_order_id"),
        status.alias("status"),
        pl.col("status").alias("source_status"),
        pl.col("date").alias("placed_at"),
        pl.when(status == "delivered").then(pl.col("date")).alias("delivered_at"),
        pl.when(status == "cancelled").then(pl.col("date")).alias("cancelled_at"),
        pl.col("currency_final").alias("currency"),
        pl.col("total_cost").alias("gross_amount"),
        pl.col("shipping").alias("shipping_amount"),
        pl.col("discount").alias("discount_amount"),
        pl.col("net").alias("net_amount"),
        pl.col("date").alias("updated_at"),
        normalize_email(pl.col("email")).alias("email"),
        normalize_phone(pl.col("phone")).alias("phone"),
        pl.col("external_customer_id").alias("source_customer_id"),
        pl.lit(None, dtype=pl.Datetime("us")).alias("sort_time"),
    )
    # A re-send carries the order's original placement time only on its first record: later records' `date`
    # is the time of their status, so placed_at must not move forward (merge keeps the earliest, see merge.py).
    return events.join(item_frame, on="rid", how="left")


SPEC = SourceSpec(
    name=NAME,
    fields=FIELDS,
    items_path="$.items",
    item_fields=ITEM_FIELDS,
    record_rules=record_rules,
    item_rules=item_rules,
)
