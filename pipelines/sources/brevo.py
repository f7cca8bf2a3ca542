"""Brevo e-commerce orders (SPEC §2.1): full orders, partial status updates and batches.

A record with an `email`, `date`, `products`, `financial`, `revenue`, `billing` or `customerId` is a full order;
anything else (`id` + `status` + `tracking` / `fulfillment` / `delivery` / `loyalty`) is a status update that
patches the order and never blanks what it does not carry.
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
    labels_of,
    line_amount,
    line_overflows,
    money_nonnegative,
    nested_text,
    quantity_rule,
    required_rule,
    status_rule,
    timestamp_rule,
    type_rule,
)

NAME = "brevo"

STATUS_MAP = {
    "pending": "pending",
    "processing": "pending",
    "completed": "pending",  # checkout / payment done, not yet delivered
    "shipped": "pending",
    "delivered": "delivered",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "refunded": "cancelled",
    "returned": "cancelled",
}

FIELDS = [
    Field("id", "$.id"),
    Field("email", "$.email"),
    Field("customer_id", "$.customerId"),
    Field("loyalty_id", "$.loyaltyId"),
    Field("date", "$.date", "ts"),
    Field("updated", "$.updatedAt", "ts"),
    Field("status", "$.status"),
    Field("delivery_date", "$.delivery.date", "ts"),
    Field("fulfillment_date", "$.fulfillment.date", "ts"),
    Field("tracking_number", "$.tracking.number"),
    Field("carrier", "$.tracking.carrier"),
    Field("billing_name", "$.billing.name"),
    Field("billing_phone", "$.billing.phone"),
    Field("shipping_name", "$.shipping.name"),
    Field("shipping_cost", "$.shipping.cost", "money"),
    Field("subtotal", "$.financial.subtotal", "money"),
    Field("fin_shipping", "$.financial.shipping", "money"),
    Field("tax", "$.financial.tax", "money"),
    Field("discount", "$.financial.discount", "money"),
    Field("total", "$.financial.total", "money"),
    Field("currency", "$.financial.currency"),
    Field("payment_method", "$.financial.paymentMethod"),
    Field("payment_status", "$.financial.paymentStatus"),
    Field("financial", "$.financial", "json"),
    Field("billing", "$.billing", "json"),
    Field("revenue", "$.revenue", "money"),
    Field("points_earned", "$.loyalty.pointsEarned", "int"),
    Field("bonus_points", "$.loyalty.bonusPoints", "int"),
    Field("points_multiplier", "$.loyalty.pointsMultiplier", "float"),
    Field("tier_before", "$.loyalty.tierBefore"),
    Field("tier_after", "$.loyalty.tierAfter"),
    Field("points_balance", "$.loyalty.totalPointsBalance", "int"),
    Field("coupon_used", "$.loyalty.couponUsed"),
    Field("coupon_discount", "$.loyalty.couponDiscount", "money"),
    Field("birthday_bonus", "$.loyalty.birthdayBonus", "int"),
    Field("referral_bonus", "$.loyalty.referralBonus", "int"),
    Field("subscription_bonus", "$.loyalty.subscriptionBonus", "int"),
    Field("review_incentive", "$.loyalty.reviewIncentive", "int"),
    Field("review_incentive_expiry", "$.loyalty.reviewIncentiveExpiry"),
    Field("points_awarded", "$.loyaltyPointsAwarded", "int"),
    Field("meta_source", "$.metadata.source"),
    Field("campaign", "$.metadata.campaign"),
    Field("referrer", "$.metadata.referrer"),
    Field("is_referral_order", "$.metadata.isReferralOrder", "bool"),
    Field("subscription_id", "$.subscription.id"),
    Field("subscription_recurring", "$.subscription.isRecurring", "bool"),
    Field("subscription", "$.subscription", "json"),
]

ITEM_FIELDS = [
    Field("id", "$.id"),
    Field("name", "$.name"),
    Field("variant", "$.variant"),
    Field("sku", "$.sku"),
    Field("quantity", "$.quantity", "float"),
    Field("price", "$.price", "money"),
    Field("categories", "$.category", "list_str"),
    Field("brand", "$.brand"),
    Field("points_earned", "$.loyaltyPointsEarned", "int"),
    Field("multiplier", "$.loyaltyMultiplier", "float"),
]

LABELS = labels_of(FIELDS)  # reason texts name fields as the source spells them, e.g. financial.subtotal
_FULL_ORDER_MARKERS = ["email", "date__text", "financial", "revenue__text", "billing", "customer_id"]
_MONEY = ["shipping_cost", "subtotal", "fin_shipping", "tax", "discount", "total", "revenue", "coupon_discount"]
_TYPED = [f.name for f in FIELDS if f.kind not in ("str", "json", "list_str")]


def is_full_order() -> pl.Expr:
    markers = [pl.col(c).is_not_null() for c in _FULL_ORDER_MARKERS]
    return pl.any_horizontal(*markers, pl.col("items__type").is_not_null())


def update_time() -> pl.Expr:
    """A status update's time: delivery.date (Delivered), fulfillment.date (Shipped), else updatedAt."""
    return pl.coalesce("delivery_date", "fulfillment_date", "updated")


def _items_sum() -> pl.Expr:
    return pl.col("items_sum")


def net_amount() -> pl.Expr:
    """subtotal − discount when `financial` is given; else Σ price × quantity; else revenue − shipping.cost."""
    return (
        pl.when(pl.col("financial").is_not_null())
        .then(pl.col("subtotal").fill_null(0) - pl.col("discount").fill_null(0))
        .when(pl.col("item_count") > 0)
        .then(_items_sum())
        .otherwise(pl.col("revenue") - pl.col("shipping_cost").fill_null(0))
        .cast(MONEY, strict=False)
    )


def record_rules(rules: Rules) -> list[Rule]:
    full = is_full_order()
    return [
        required_rule(
            {
                "id": pl.col("id").is_not_null(),
                "an update time (delivery.date, fulfillment.date or updatedAt)": full
                | update_time().is_not_null()
                | pl.col("updated__text").is_not_null()
                | pl.col("delivery_date__text").is_not_null()
                | pl.col("fulfillment_date__text").is_not_null(),
            }
        ),
        Rule(
            "invalid_type",
            ~(
                pl.any_horizontal(
                    [
                        pl.col(f"{n}__text").is_not_null() & pl.col(n).is_null()
                        for n in _TYPED
                        if n not in ("date", "updated", "delivery_date", "fulfillment_date")
                    ]
                )
                | (pl.col("items__type").is_not_null() & (pl.col("items__type") != "ARRAY"))
                | pl.col("item__invalid_type").fill_null(False)
                | nested_text(FIELDS)[0]
            ),
            pl.coalesce(
                nested_text(FIELDS)[1],
                pl.col("item__invalid_type__reason"),
                pl.when(pl.col("items__type").is_not_null() & (pl.col("items__type") != "ARRAY")).then(
                    pl.lit("products is not a list")
                ),
                type_rule(
                    [n for n in _TYPED if n not in ("date", "updated", "delivery_date", "fulfillment_date")], LABELS
                ).reason,
            ),
        ),
        timestamp_rule(
            ["date", "updated", "delivery_date", "fulfillment_date"],
            offset_required=["date", "updated", "delivery_date", "fulfillment_date"],
            labels=LABELS,
        ),
        Rule(
            "missing_contact",
            ~full | pl.col("email").is_not_null(),
            pl.lit("full order without an email: the buyer cannot be reached"),
        ),
        status_rule(list(STATUS_MAP)),
        Rule(
            "negative_amount",
            money_nonnegative(_MONEY).ok
            & (pl.col("net").fill_null(0) >= 0)
            & ~pl.col("item__negative_amount").fill_null(False),
            # the field the source gave below zero first, then an item, then the derived net amount
            pl.coalesce(
                money_nonnegative(_MONEY, LABELS).reason,
                pl.col("item__negative_amount__reason"),
                pl.when(pl.col("net").fill_null(0) < 0).then(pl.format("net amount {} is below zero", pl.col("net"))),
            ),
        ),
        items_rule("invalid_quantity", "quantity"),
        currency_rule(list(rules.fx_rates), "currency_final"),
    ]


def item_rules(rules: Rules) -> list[Rule]:
    return [
        Rule(
            "invalid_type",
            ~(
                (pl.col("item__type") != "OBJECT")
                | (pl.col("quantity__text").is_not_null() & pl.col("quantity").is_null())
                | (pl.col("price__text").is_not_null() & pl.col("price").is_null())
                | line_overflows("quantity", "price")
            ),
            pl.when(pl.col("item__type") != "OBJECT")
            .then(pl.lit("is not an object"))
            .when(line_overflows("quantity", "price"))
            .then(
                pl.format(
                    "price {} × quantity {} is too large for an amount", pl.col("price"), pl.col("quantity__text")
                )
            )
            .when(pl.col("quantity__text").is_not_null() & pl.col("quantity").is_null())
            .then(pl.format("quantity {} is not a number", pl.col("quantity__text")))
            .otherwise(pl.format("price {} is not a number", pl.col("price__text"))),
        ),
        Rule(
            "negative_amount", pl.col("price").fill_null(0) >= 0, pl.format("price {} is below zero", pl.col("price"))
        ),
        quantity_rule(),
    ]


def prepare(fields: pl.DataFrame, items: pl.DataFrame, rules: Rules) -> pl.DataFrame:
    """Columns the rules need beyond the raw fields: item sums, the net amount, the effective currency."""
    sums = items.group_by("rid").agg(
        # non-strict casts: an absurd quantity or amount is quarantined by the rules, it must not stop the run
        line_amount("quantity", "price").sum().cast(MONEY, strict=False).alias("items_sum"),
        pl.len().alias("item_count"),
    )
    out = fields.join(sums, on="rid", how="left").with_columns(pl.col("item_count").fill_null(0))
    return out.with_columns(
        net_amount().alias("net"),
        pl.when(is_full_order())
        .then(pl.coalesce(pl.col("currency").str.to_uppercase(), pl.lit(rules.default_currency[NAME])))
        .alias("currency_final"),
    )


def to_events(good: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """Canonical event columns for accepted records (`good` has the prepared fields)."""
    from pipelines.sources.common import items_struct, normalize_email, normalize_phone

    full = is_full_order()
    status = pl.col("status").str.to_lowercase().replace_strict(STATUS_MAP, default=None)
    status = pl.when(full & status.is_null()).then(pl.lit("pending")).otherwise(status)
    event_time = pl.when(full).then(pl.coalesce("delivery_date", "updated", "date")).otherwise(update_time())
    name = pl.coalesce("billing_name", "shipping_name").str.strip_chars()
    item_frame = items_struct(
        items,
        {
            "line_number": pl.col("line_number"),
            "product_id": pl.col("id"),
            "sku": pl.col("sku"),
            "name": pl.col("name"),
            "variant": pl.col("variant"),
            "categories": pl.col("categories"),
            "brand": pl.col("brand"),
            "quantity": pl.col("quantity").cast(pl.Int64),
            "unit_price": pl.col("price"),
            "line_amount": line_amount("quantity", "price"),
            "reported_points": pl.col("points_earned"),
            "reported_multiplier": pl.col("multiplier"),
        },
    )
    events = good.with_columns(
        pl.when(full).then(pl.lit("order")).otherwise(pl.lit("update")).alias("record_kind"),
        pl.col("id").alias("source_order_id"),
        status.alias("status"),
        pl.col("status").alias("source_status"),
        pl.col("date").alias("placed_at"),
        pl.when(status == "delivered").then(event_time).alias("delivered_at"),
        pl.when(status == "cancelled").then(event_time).alias("cancelled_at"),
        pl.col("currency_final").alias("currency"),
        pl.when(full).then(pl.coalesce("total", "revenue")).alias("gross_amount"),
        pl.when(full).then(pl.coalesce("fin_shipping", "shipping_cost")).alias("shipping_amount"),
        pl.col("tax").alias("tax_amount"),
        pl.col("discount").alias("discount_amount"),
        pl.when(full).then(pl.col("net")).alias("net_amount"),
        pl.col("coupon_used").alias("coupon_code"),
        pl.col("coupon_discount"),
        pl.col("meta_source").alias("channel"),
        pl.when(pl.col("subscription").is_not_null())
        .then(pl.coalesce(pl.col("subscription_recurring"), pl.lit(True)))
        .alias("is_subscription"),
        pl.col("points_earned").alias("reported_points_earned"),
        pl.col("points_awarded").alias("reported_points_awarded"),
        pl.col("points_multiplier").alias("reported_points_multiplier"),
        pl.col("tier_before").alias("reported_tier_before"),
        pl.col("tier_after").alias("reported_tier_after"),
        pl.col("points_balance").alias("reported_points_balance"),
        pl.coalesce(event_time, pl.col("date")).alias("updated_at"),
        normalize_email(pl.col("email")).alias("email"),
        normalize_phone(pl.col("billing_phone")).alias("phone"),
        name.str.split(" ").list.first().alias("first_name"),
        pl.when(name.str.contains(" ")).then(name.str.replace(r"^\S+\s+", "")).alias("last_name"),
        pl.col("customer_id").alias("source_customer_id"),
        pl.lit(None, dtype=pl.Datetime("us")).alias("sort_time"),
    )
    return events.join(item_frame, on="rid", how="left")


SPEC = SourceSpec(
    name=NAME,
    fields=FIELDS,
    items_path="$.products",
    item_fields=ITEM_FIELDS,
    record_rules=record_rules,
    item_rules=item_rules,
)
