"""Points ledger and tiers (SPEC §5): a pure function of (orders, order lines, rules, as-of date).

`compute_ledger` builds `core.points_ledger`, `core.customer_points`, `core.tier_history`, a per-order
reconciliation of source-reported against computed figures, and the list of unpriced redemptions. It works on
whole frames (no Python loop over orders or customers), so the same code serves ten orders and ten million,
and every result depends on one customer's history only (the data can be split by customer).

How the hard parts are computed
- Earn is exact: amounts are integers in cents and rule multipliers integers at their own decimal scale, so
  `floor(Σ line_net × category × tier × points_per_unit)` is one integer floor division of Int128 values. Line
  nets are the exact rational shares of `net_amount_reporting` (no rounding until the final floor).
- Tier ↔ earn: the tier multiplier of an earn depends on earlier earns. Tiers are settled by iterating to the
  fixed point over whole frames: start every earn at the base tier, compute tiers, recompute the earns whose
  tier moved, repeat for the customers that changed only. The map is monotone and causal, so it converges to
  the same result as an event-by-event run: each round fixes at least the customer's next earn in time, and
  in practice a round fixes everything up to the next tier change.
- The held tier is a running maximum: within the stretch that starts at a month-start evaluation, the tier is
  max(tier evaluated at that month start, tier of the qualifying points after each posting instant). Month
  starts are only materialised where a downgrade can happen (the first month start that sees a reversal or a
  lot leaving the 365-day window), never as a customer × month grid.
- FIFO and expiry: lots are laid end to end on a cumulative axis P (lot i covers [L_i, L_i + size_i));
  negatives accumulate N(t). A lot expiring is always the oldest one left (expiry_days is the same for every
  lot), so it consumes exactly its own remainder and total consumption is C(t) = N(t) + D(t), where D(t) is a
  running maximum over the expiries x_k ≤ t of (L_k + size_k − N(x_k)), floored at 0. The expire entry of lot
  k is the jump of D at x_k. A shortfall (C > P) is debt that the next lots pay first; it never expires.

Decisions where the SPEC is silent (an analyst, an on-call engineer and a marketer would expect these)
- As-of date D: everything effective up to D 23:59:59.999999 UTC is posted; nothing later, including
  month-start evaluations and expiries.
- Entries of one instant post in the order earn, bonus, redeem, reversal, expire, adjust; within a type by
  order_id, then rule; expiries in the order of their lots. Output rows are sorted the same way, per customer,
  and `balance_after` is the running sum in that order.
- Entry rules (part of the deterministic `entry_id` = "p_" + sha256(customer|order|entry_type|rule)[:24]):
  `earn`; `first_purchase`; `source:<bonus name>` (e.g. `source:birthdayBonus`); `coupon:<code>` for a
  redemption; `reversal:<reversed rule>`; `expire:<rule of the lot>` (on the lot's order);
  `write_off:<instant>` for adjust entries (no order).
- Coupon value: `coupon_discount` is in the order's currency and `redeem.points_per_unit` is per 1.00 of the
  reporting currency, so a redemption costs round_half_up(coupon_discount × fx_rate × points_per_unit) points,
  computed exactly with one rounding (SAVE10 worth 35.00 USD → 700 points). Without a value the rewards
  catalogue (`redeem.rewards[code]`) prices it; with neither (or a currency without an FX rate and no
  catalogue entry) it posts nothing and is listed in `unpriced_redemptions`. A blank coupon code is no coupon.
  Abandoned carts and orders without `placed_at` redeem nothing.
- An order cancelled at or before its earn time (delivered_at + pending_days) never earns and gets no bonus;
  its redemption is still refunded. A refund posts at max(cancelled_at, placed_at). A cancelled order without
  `cancelled_at` (core.orders forbids it) posts nothing at all.
- First-purchase bonus: on the customer's first earning order, by (earn time, order_id). Orders cancelled
  before their earn time never earn, so they are not first; a first order cancelled later keeps the bonus
  reversed and no other order inherits it. Source bonuses post when positive; zero or null posts nothing.
- Earns always post, even 0 points (every delivered order has exactly one earn); a delivered order without
  `net_amount_reporting` earns 0. Lines are weighted by quantity × unit_price (line_amount when the price is
  missing); when the weights add up to 0 the order earns as an order without items. A line takes the largest
  multiplier among its categories that have one, 1 when none has.
- Tiers: qualifying points at time t = Σ earn, bonus and their reversals with effective_at in (t − 365 days,
  t]. Upgrades are evaluated after each instant at which such an entry posts (entries of one instant post
  together), so an earn uses the tier held just before its instant, after the month-start evaluation when the
  instant is 00:00 on the 1st. A month-start evaluation sets the tier to the one the qualifying points give,
  from entries strictly before that instant: a fall is `monthly_downgrade`; a rise (only possible when a
  reversal leaves the window) is recorded as `upgrade`. Several changes at one instant are one row.
- `pending_points`: earns of orders delivered on or before D whose pending period ends after D, at the tier
  held at the end of D, plus their bonuses (what the customer will see if nothing else happens).
- `lifetime_earned` = earn + bonus net of their reversals; `lifetime_redeemed` = redemptions net of refunds;
  `lifetime_expired` = expired points (both positive numbers); balance = earned − redeemed − expired + adjust.
- `allow_negative_balance: false`: entries are never edited, so at the end of an instant that leaves the
  balance below zero an `adjust` entry writes the shortfall off (a lot that the debt consumes at once).
- Reconciliation: one row per order with a customer; computed figures are null where the order posted no earn;
  `computed_tier_after` is the tier held after the order's earn instant; tiers compare case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated

import pandera.polars as pa
import polars as pl

from pipelines import hashing
from pipelines.rules import SOURCE_BONUS_COLUMNS, Rules
from pipelines.schemas import TS, conform

Timestamp = Annotated[pl.Datetime, "us", None]  # naive UTC, microseconds, in pandera models
QUALIFYING_WINDOW = timedelta(days=365)
ENTRY_TYPES = ("earn", "bonus", "redeem", "reversal", "expire", "adjust")
TIER_CHANGE_REASONS = ("upgrade", "monthly_downgrade")
_RANK = {name: rank for rank, name in enumerate(ENTRY_TYPES)}

# ----------------------------------------------------------------------------------------------------
# Output tables (public names: SPEC §5). The lead moves these next to the other canonical tables.
# ----------------------------------------------------------------------------------------------------

POINTS_LEDGER_COLUMNS: dict[str, pl.DataType] = {
    "entry_id": pl.String,
    "customer_id": pl.String,
    "order_id": pl.String,
    "entry_type": pl.String,
    "points": pl.Int64,
    "effective_at": TS,
    "rule": pl.String,
    "balance_after": pl.Int64,
}

CUSTOMER_POINTS_COLUMNS: dict[str, pl.DataType] = {
    "customer_id": pl.String,
    "balance": pl.Int64,
    "pending_points": pl.Int64,
    "lifetime_earned": pl.Int64,
    "lifetime_redeemed": pl.Int64,
    "lifetime_expired": pl.Int64,
    "tier": pl.String,
    "qualifying_points": pl.Int64,
}

TIER_HISTORY_COLUMNS: dict[str, pl.DataType] = {
    "customer_id": pl.String,
    "tier_from": pl.String,
    "tier_to": pl.String,
    "changed_at": TS,
    "reason": pl.String,
}

POINTS_RECONCILIATION_COLUMNS: dict[str, pl.DataType] = {
    "order_id": pl.String,
    "customer_id": pl.String,
    "computed_points": pl.Int64,
    "computed_bonus": pl.Int64,
    "reported_points_earned": pl.Int64,
    "reported_points_awarded": pl.Int64,
    "computed_tier_after": pl.String,
    "reported_tier_after": pl.String,
    "points_earned_difference": pl.Int64,  # computed_points − reported_points_earned
    "points_awarded_difference": pl.Int64,  # computed_points + computed_bonus − reported_points_awarded
    "tier_after_matches": pl.Boolean,
}

UNPRICED_REDEMPTION_COLUMNS: dict[str, pl.DataType] = {
    "order_id": pl.String,
    "customer_id": pl.String,
    "coupon_code": pl.String,
    "placed_at": TS,
}

# the columns of each LedgerResult frame
LEDGER_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    "points_ledger": POINTS_LEDGER_COLUMNS,
    "customer_points": CUSTOMER_POINTS_COLUMNS,
    "tier_history": TIER_HISTORY_COLUMNS,
    "reconciliation": POINTS_RECONCILIATION_COLUMNS,
    "unpriced_redemptions": UNPRICED_REDEMPTION_COLUMNS,
}


class PointsLedger(pa.DataFrameModel):
    """core.points_ledger: one row per points entry, in posting order per customer."""

    entry_id: str = pa.Field(unique=True)
    customer_id: str
    order_id: str = pa.Field(nullable=True)
    entry_type: str = pa.Field(isin=list(ENTRY_TYPES))
    points: int
    effective_at: Timestamp
    rule: str
    balance_after: int

    @pa.dataframe_check(name="balance_after_is_running_sum")
    def _running_sum(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("balance_after") == pl.col("points").cum_sum().over("customer_id"))

    @pa.dataframe_check(name="entries_carry_their_sign")
    def _signs(cls, data: pa.PolarsData) -> pl.LazyFrame:
        kind = pl.col("entry_type")
        return data.lazyframe.select(
            pl.when(kind.is_in(["earn", "bonus", "adjust"]))
            .then(pl.col("points") >= 0)
            .when(kind.is_in(["redeem", "expire"]))
            .then(pl.col("points") <= 0)
            .otherwise(True)
        )

    @pa.dataframe_check(name="only_adjust_entries_have_no_order")
    def _orders(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("entry_type") == "adjust") | pl.col("order_id").is_not_null())

    class Config:
        strict = True
        ordered = True


class CustomerPoints(pa.DataFrameModel):
    """core.customer_points: one row per customer, as of the end of the as-of date."""

    customer_id: str = pa.Field(unique=True)
    balance: int
    pending_points: int = pa.Field(ge=0)
    lifetime_earned: int
    lifetime_redeemed: int
    lifetime_expired: int = pa.Field(ge=0)
    tier: str
    qualifying_points: int

    class Config:
        strict = True
        ordered = True


class TierHistory(pa.DataFrameModel):
    """core.tier_history: one row per tier change."""

    customer_id: str
    tier_from: str
    tier_to: str
    changed_at: Timestamp
    reason: str = pa.Field(isin=list(TIER_CHANGE_REASONS))

    @pa.dataframe_check(name="a_change_changes_the_tier")
    def _changes(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("tier_from") != pl.col("tier_to"))

    @pa.dataframe_check(name="one_change_per_customer_instant_and_reason")
    def _unique(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(~pl.struct("customer_id", "changed_at", "reason").is_duplicated())

    class Config:
        strict = True
        ordered = True


class PointsReconciliation(pa.DataFrameModel):
    """Source-reported against computed points and tier: one row per order with a customer."""

    order_id: str = pa.Field(unique=True)
    customer_id: str
    computed_points: int = pa.Field(nullable=True, ge=0)
    computed_bonus: int = pa.Field(nullable=True, ge=0)
    reported_points_earned: int = pa.Field(nullable=True)
    reported_points_awarded: int = pa.Field(nullable=True)
    computed_tier_after: str = pa.Field(nullable=True)
    reported_tier_after: str = pa.Field(nullable=True)
    points_earned_difference: int = pa.Field(nullable=True)
    points_awarded_difference: int = pa.Field(nullable=True)
    tier_after_matches: bool = pa.Field(nullable=True)

    class Config:
        strict = True
        ordered = True


class UnpricedRedemptions(pa.DataFrameModel):
    """Orders whose coupon has neither a value in the record nor a price in `redeem.rewards`."""

    order_id: str = pa.Field(unique=True)
    customer_id: str
    coupon_code: str
    placed_at: Timestamp

    class Config:
        strict = True
        ordered = True


@dataclass(frozen=True)
class LedgerResult:
    """The ledger tables as of the end of the as-of date; every frame sorted deterministically."""

    points_ledger: pl.DataFrame  # core.points_ledger, by customer then posting order
    customer_points: pl.DataFrame  # core.customer_points, by customer
    tier_history: pl.DataFrame  # core.tier_history, by customer and change time
    reconciliation: pl.DataFrame  # reported against computed figures, by order
    unpriced_redemptions: pl.DataFrame  # coupons that post nothing, by order

    @property
    def unpriced_redemption_count(self) -> int:
        return self.unpriced_redemptions.height


def as_of_end(as_of: date) -> datetime:
    """The last instant the as-of date covers (naive UTC, microseconds)."""
    return datetime.combine(as_of, time.max)


def compute_ledger(
    orders: pl.DataFrame, order_items: pl.DataFrame, rules: Rules, as_of: date, *, validate: bool = True
) -> LedgerResult:
    """The points ledger and what derives from it, as of the end of `as_of` (SPEC §5)."""
    end = as_of_end(as_of)
    scale = _Scales(rules)
    prepared, customer_ids = _prepare_orders(orders, order_items, rules, scale)

    posted = prepared.filter(pl.col("earns") & (pl.col("earn_at") <= end)).with_columns(
        pl.when(pl.col("cancel_at") <= end).then(pl.col("cancel_at")).alias("rev_at")
    )
    bonuses = _bonus_entries(posted.lazy(), rules).collect()
    earns, timeline = _settle_tiers(posted, bonuses, rules, scale, end)

    earn_entries = _entries(
        earns.lazy(), "earn", pl.lit("earn"), pl.col("points"), pl.col("earn_at"), pl.col("rev_at"), _sub("earn")
    )
    refund_at = pl.when(pl.col("cancel_at").is_not_null()).then(pl.max_horizontal("cancel_at", "placed_at"))
    redeemable = prepared.lazy().filter(pl.col("redeem_points").is_not_null() & (pl.col("placed_at") <= end))
    redeem_entries = _entries(
        redeemable,
        "redeem",
        pl.concat_str(pl.lit("coupon:"), pl.col("coupon")),
        pl.col("redeem_points"),
        pl.col("placed_at"),
        pl.when(refund_at <= end).then(refund_at),
        _COUPON_SUB,
    )
    postings = pl.concat([earn_entries, bonuses.lazy(), redeem_entries])
    postings = pl.concat([postings, _reversals(postings)]).collect()
    expiries, write_offs = _expiries_and_write_offs(postings, rules, end)

    ledger = (
        pl.concat([postings, expiries, write_offs])
        .sort(_ORDER_KEYS)
        .with_columns(pl.col("points").cum_sum().over("_c").alias("balance_after"))
    )
    ledger = ledger.with_columns(
        customer_ids.gather(ledger["_c"]).alias("customer_id"),
        prepared["order_id"].gather(ledger["_o"]).alias("order_id"),  # prepared row i is order key i
    )
    key = pl.concat_str(
        "customer_id",
        pl.lit("|"),
        pl.col("order_id").fill_null(""),
        pl.lit("|"),
        pl.col("entry_type").cast(pl.String),
        pl.lit("|"),
        "rule",
    )
    ids = hashing.sha256_column(ledger.select(key.alias("key")), pl.col("key"), "entry_id", prefix="p_", length=24)
    ledger = ledger.with_columns(ids["entry_id"])

    tier_names = {index: tier.name for index, tier in enumerate(rules.tiers)}
    result = LedgerResult(
        points_ledger=conform(ledger, POINTS_LEDGER_COLUMNS),
        customer_points=_customer_points(prepared, customer_ids, ledger, timeline, rules, scale, end, tier_names),
        tier_history=_tier_history(timeline, customer_ids, tier_names),
        reconciliation=_reconciliation(prepared, ledger, timeline, tier_names),
        unpriced_redemptions=conform(
            prepared.filter(
                pl.col("has_coupon") & pl.col("redeem_points").is_null() & (pl.col("placed_at") <= end)
            ).select("order_id", "customer_id", pl.col("coupon").alias("coupon_code"), "placed_at"),
            UNPRICED_REDEMPTION_COLUMNS,
        ),
    )
    if validate:
        validate_ledger(result)
    return result


def validate_ledger(result: LedgerResult) -> None:
    """Check every output frame against its model (collected frames, every failure reported at once)."""
    PointsLedger.validate(result.points_ledger, lazy=True)
    CustomerPoints.validate(result.customer_points, lazy=True)
    TierHistory.validate(result.tier_history, lazy=True)
    PointsReconciliation.validate(result.reconciliation, lazy=True)
    UnpricedRedemptions.validate(result.unpriced_redemptions, lazy=True)


# ----------------------------------------------------------------------------------------------------
# Exact arithmetic: rule decimals as integers at a common scale per kind.
# ----------------------------------------------------------------------------------------------------


def _decimal_places(values: Iterable[Decimal]) -> int:
    return max([0, *(-int(value.as_tuple().exponent) for value in values)])


def _scaled(value: Decimal, places: int) -> int:
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():  # cannot happen: `places` covers every value
        raise ValueError(f"{value} has more than {places} decimal places")
    return int(scaled)


class _Scales:
    """Every rule decimal as an integer: tier and category multipliers, points per unit, FX rates."""

    def __init__(self, rules: Rules) -> None:
        self.tier_places = _decimal_places(t.multiplier for t in rules.tiers)
        self.category_places = _decimal_places(rules.category_multipliers.values())
        self.earn_places = _decimal_places([rules.earn.points_per_unit])
        self.fx_places = _decimal_places(rules.fx_rates.values())
        self.redeem_places = _decimal_places([rules.redeem.points_per_unit])
        self.tier_multipliers = [_scaled(t.multiplier, self.tier_places) for t in rules.tiers]
        self.category_one = 10**self.category_places
        self.categories = pl.DataFrame(
            {
                "category": list(rules.category_multipliers),
                "category_multiplier": [_scaled(v, self.category_places) for v in rules.category_multipliers.values()],
            },
            schema={"category": pl.String, "category_multiplier": pl.Int128},
        )
        self.earn_per_unit = _scaled(rules.earn.points_per_unit, self.earn_places)
        # cents × multipliers: the divisor that brings an order's numerator back to points
        self.earn_divisor = 100 * 10 ** (self.earn_places + self.category_places + self.tier_places)
        self.fx = pl.DataFrame(
            {"currency": list(rules.fx_rates), "fx": [_scaled(v, self.fx_places) for v in rules.fx_rates.values()]},
            schema={"currency": pl.String, "fx": pl.Int128},
        )
        self.redeem_per_unit = _scaled(rules.redeem.points_per_unit, self.redeem_places)
        self.redeem_divisor = 100 * 10 ** (self.fx_places + self.redeem_places)
        self.rewards = pl.DataFrame(
            {"coupon": list(rules.redeem.rewards), "reward_points": list(rules.redeem.rewards.values())},
            schema={"coupon": pl.String, "reward_points": pl.Int64},
        )

    def earn_points(self, tier_index: pl.Expr) -> pl.Expr:
        """floor(numerator × tier multiplier ÷ denominator): the order's earn at that tier, exactly."""
        multiplier = tier_index.replace_strict(dict(enumerate(self.tier_multipliers)), return_dtype=pl.Int128)
        return (pl.col("earn_numerator") * multiplier // pl.col("earn_denominator")).cast(pl.Int64)


def _cents(column: str) -> pl.Expr:
    return (pl.col(column).cast(pl.Decimal(38, 2)) * 100).cast(pl.Int128)


# ----------------------------------------------------------------------------------------------------
# Orders: when each one earns, redeems and is reversed.
# ----------------------------------------------------------------------------------------------------

# The only columns of core.orders and core.order_items the ledger reads (`runs` hashes them to tell which
# customers' orders changed; a change elsewhere cannot change a ledger result).
ORDER_INPUT_COLUMNS = [
    "order_id",
    "customer_id",
    "status",
    "placed_at",
    "delivered_at",
    "cancelled_at",
    "currency",
    "net_amount_reporting",
    "coupon_code",
    "coupon_discount",
    *SOURCE_BONUS_COLUMNS.values(),
    "reported_points_earned",
    "reported_points_awarded",
    "reported_tier_after",
]
ITEM_INPUT_COLUMNS = ["order_id", "quantity", "unit_price", "line_amount", "categories"]


def _prepare_orders(
    orders: pl.DataFrame, order_items: pl.DataFrame, rules: Rules, scale: _Scales
) -> tuple[pl.DataFrame, pl.Series]:
    """(one row per order with a customer, the customer ids).

    Row i of the orders is order key `_o` = i (orders sorted by order_id); `_c` indexes the sorted customer ids.
    Sorting and grouping on these integers instead of the ids is what keeps the ledger fast.
    """
    status = pl.col("status")
    cancelled = status == "cancelled"
    void = cancelled & pl.col("cancelled_at").is_null()
    earn_at = pl.when(status.is_in(["delivered", "cancelled"]) & ~void).then(
        pl.col("delivered_at") + pl.duration(days=rules.earn.pending_days)
    )
    coupon = pl.col("coupon_code").str.strip_chars()
    has_coupon = pl.col("coupon").is_not_null() & (status != "abandoned") & ~void & pl.col("placed_at").is_not_null()
    twice_value = _cents("coupon_discount") * pl.col("fx") * scale.redeem_per_unit * 2
    valued = (twice_value + scale.redeem_divisor) // (2 * scale.redeem_divisor)  # round half up
    redeem = pl.coalesce(valued.cast(pl.Int64), pl.col("reward_points"))
    earns = pl.col("earn_at").is_not_null() & (
        pl.col("cancel_at").is_null() | (pl.col("cancel_at") > pl.col("earn_at"))
    )
    with_items = pl.col("weight").fill_null(0) > 0
    net_cents = _cents("net_amount_reporting").fill_null(0) * scale.earn_per_unit
    first_at = pl.col("earns") & (pl.col("earn_at") == pl.col("earn_at").filter(pl.col("earns")).min().over("_c"))

    narrow = (
        orders.lazy()
        .select(ORDER_INPUT_COLUMNS)
        .filter(pl.col("customer_id").is_not_null() & pl.col("order_id").is_not_null())
    )
    customer_ids = narrow.select(pl.col("customer_id").unique().sort()).collect()["customer_id"]
    customer_keys = pl.LazyFrame({"customer_id": customer_ids}).with_row_index("_c")
    prepared = (
        narrow.sort("order_id")
        .with_row_index("_o")
        .join(customer_keys, on="customer_id", how="left", maintain_order="left")
        .join(scale.fx.lazy(), on="currency", how="left", maintain_order="left")
        .join(_order_weights(order_items, scale), on="order_id", how="left", maintain_order="left")
        .with_columns(
            earn_at.alias("earn_at"),
            pl.when(cancelled).then(pl.col("cancelled_at")).alias("cancel_at"),
            pl.when(coupon.str.len_chars() > 0).then(coupon).alias("coupon"),
        )
        .join(scale.rewards.lazy(), on="coupon", how="left", maintain_order="left")
        .with_columns(earns.alias("earns"), has_coupon.alias("has_coupon"))
        .with_columns(
            pl.when(pl.col("has_coupon")).then(-redeem).alias("redeem_points"),
            pl.when(with_items)
            .then(net_cents * pl.col("weighted"))
            .otherwise(net_cents * scale.category_one)
            .alias("earn_numerator"),
            pl.when(with_items)
            .then(pl.col("weight") * scale.earn_divisor)
            .otherwise(pl.lit(scale.earn_divisor, pl.Int128))
            .alias("earn_denominator"),
            first_at.alias("_first_at"),
        )
        .with_columns(  # the first earning order: earliest earn, then smallest order id
            (pl.col("_first_at") & (pl.col("_o") == pl.col("_o").filter(pl.col("_first_at")).min().over("_c"))).alias(
                "first_earning_order"
            )
        )
        .drop("fx", "reward_points", "weight", "weighted", "_first_at", "coupon_code", "coupon_discount")
        .collect()
    )
    return prepared, customer_ids


def _order_weights(order_items: pl.DataFrame, scale: _Scales) -> pl.LazyFrame:
    """Per order: Σ line weights and Σ line weight × category multiplier (scaled integers)."""
    weight = pl.coalesce(pl.col("quantity").cast(pl.Int128) * _cents("unit_price"), _cents("line_amount"), 0)
    lines = (
        order_items.lazy()
        .select(ITEM_INPUT_COLUMNS)
        .select("order_id", "categories", weight.alias("weight"))
        .with_row_index("line")
    )
    multipliers = (
        lines.select("line", "categories")
        .explode("categories")
        .join(scale.categories.lazy(), left_on="categories", right_on="category", how="inner")
        .group_by("line")
        .agg(pl.col("category_multiplier").max())
    )
    return (
        lines.join(multipliers, on="line", how="left")
        .group_by("order_id")
        .agg(
            pl.col("weight").sum(),
            (pl.col("weight") * pl.col("category_multiplier").fill_null(scale.category_one)).sum().alias("weighted"),
        )
    )


# ----------------------------------------------------------------------------------------------------
# Entries.
# ----------------------------------------------------------------------------------------------------

# Posting order within a customer (`_c`); `_o` sorts like order_id and `_sub` like the rule among the
# entries of one order and type; expiries sort among themselves like their lots.
_ORDER_KEYS = ["_c", "effective_at", "_rank", "_lot_rank", "_o", "_sub"]
_ENTRY_TYPE = pl.Enum(ENTRY_TYPES)
# Rules other than a coupon's, in string order; every `coupon:<code>` sorts before all of them.
_NAMED_RULES = sorted(["earn", "first_purchase", *(f"source:{name}" for name in SOURCE_BONUS_COLUMNS)])
_COUPON_SUB = 0
assert all(name > "coupon:" for name in _NAMED_RULES)


def _sub(rule: str) -> int:
    return 1 + _NAMED_RULES.index(rule)


def _entries(
    frame: pl.LazyFrame,
    entry_type: str,
    rule: pl.Expr,
    points: pl.Expr,
    at: pl.Expr,
    reversed_at: pl.Expr,
    sub: int,
) -> pl.LazyFrame:
    """Ledger entries with their sort helpers; `_rev_at`: when the entry is reversed (null: not as of D)."""
    rank = pl.lit(_RANK[entry_type], pl.Int8)
    kind = pl.lit(entry_type, _ENTRY_TYPE)
    return frame.select(
        "_c",
        "_o",
        kind.alias("entry_type"),
        rule.alias("rule"),
        points.cast(pl.Int64).alias("points"),
        at.alias("effective_at"),
        rank.alias("_rank"),
        rank.alias("_lot_rank"),
        pl.lit(sub, pl.Int8).alias("_sub"),
        kind.alias("_origin"),
        reversed_at.cast(TS).alias("_rev_at"),
    )


def _bonus_entries(posted: pl.LazyFrame, rules: Rules) -> pl.LazyFrame:
    """First-purchase and source bonuses of the orders whose earn posts, at the earn's time."""
    frames = [
        _entries(
            posted.filter(pl.col(SOURCE_BONUS_COLUMNS[name]) > 0),
            "bonus",
            pl.lit(f"source:{name}"),
            pl.col(SOURCE_BONUS_COLUMNS[name]),
            pl.col("earn_at"),
            pl.col("rev_at"),
            _sub(f"source:{name}"),
        )
        for name in rules.source_bonuses
    ]
    if rules.first_purchase_bonus > 0:
        frames.append(
            _entries(
                posted.filter(pl.col("first_earning_order")),
                "bonus",
                pl.lit("first_purchase"),
                pl.lit(rules.first_purchase_bonus),
                pl.col("earn_at"),
                pl.col("rev_at"),
                _sub("first_purchase"),
            )
        )
    if not frames:
        return _entries(posted.clear(), "bonus", pl.lit("none"), pl.lit(0), pl.col("earn_at"), pl.col("rev_at"), 0)
    return pl.concat(frames)


def _reversals(postings: pl.LazyFrame) -> pl.LazyFrame:
    """The equal and opposite entry of every posting whose order was cancelled on or before D."""
    rank = pl.lit(_RANK["reversal"], pl.Int8)
    return postings.filter(pl.col("_rev_at").is_not_null()).select(
        "_c",
        "_o",
        pl.lit("reversal", _ENTRY_TYPE).alias("entry_type"),
        pl.concat_str(pl.lit("reversal:"), pl.col("rule")).alias("rule"),
        (-pl.col("points")).alias("points"),
        pl.col("_rev_at").alias("effective_at"),
        rank.alias("_rank"),
        rank.alias("_lot_rank"),
        "_sub",
        "_origin",
        pl.lit(None, TS).alias("_rev_at"),
    )


# ----------------------------------------------------------------------------------------------------
# Tiers.
# ----------------------------------------------------------------------------------------------------

_EXIT, _EVALUATION, _INSTANT = 0, 1, 2  # order of the timeline rows of one instant


def _tier_index(points: pl.Expr, rules: Rules) -> pl.Expr:
    """Index of the highest tier whose min_points ≤ points (0 for anything below the second tier)."""
    above = [(points >= tier.min_points).cast(pl.Int32) for tier in rules.tiers[1:]]
    return pl.sum_horizontal(above).cast(pl.Int32) if above else pl.lit(0, pl.Int32)


def _next_month_start(at: pl.Expr) -> pl.Expr:
    return at.dt.truncate("1mo").dt.offset_by("1mo")


def _month_start_on_or_after(at: pl.Expr) -> pl.Expr:
    start = at.dt.truncate("1mo")
    return pl.when(start == at).then(at).otherwise(start.dt.offset_by("1mo"))


def _tier_timeline(deltas: pl.LazyFrame, rules: Rules, end: datetime) -> pl.LazyFrame:
    """Held tier along each customer's history.

    `deltas` are qualifying points (_c, time, delta). Rows: posting instants, exits from the qualifying
    window, and the month starts where a downgrade can happen. `qualifying` is the window sum after the row,
    `tier` the tier held after it, `tier_before` the tier held before it.
    """
    instants = deltas.group_by("_c", "time").agg(pl.col("delta").sum())
    exits = instants.select(
        "_c", (pl.col("time") + QUALIFYING_WINDOW).alias("time"), (-pl.col("delta")).alias("delta")
    ).filter((pl.col("delta") != 0) & (pl.col("time") <= end))
    evaluations = (
        pl.concat(
            [
                instants.filter(pl.col("delta") < 0).select("_c", _next_month_start(pl.col("time")).alias("time")),
                exits.select("_c", _month_start_on_or_after(pl.col("time")).alias("time")),
            ]
        )
        .filter(pl.col("time") <= end)
        .unique()
        .with_columns(pl.lit(0, pl.Int64).alias("delta"))
    )
    rows = pl.concat(
        [
            exits.with_columns(pl.lit(_EXIT, pl.Int8).alias("kind")),
            evaluations.with_columns(pl.lit(_EVALUATION, pl.Int8).alias("kind")),
            instants.with_columns(pl.lit(_INSTANT, pl.Int8).alias("kind")),
        ],
        how="diagonal_relaxed",
    )
    return (
        rows.sort("_c", "time", "kind")
        .with_columns(pl.col("delta").cum_sum().over("_c").alias("qualifying"))
        .with_columns(
            pl.when(pl.col("kind") != _EXIT).then(_tier_index(pl.col("qualifying"), rules)).alias("_reached"),
            (pl.col("kind") == _EVALUATION).cum_sum().over("_c").alias("_stretch"),
        )
        .with_columns(pl.col("_reached").cum_max().forward_fill().over("_c", "_stretch").fill_null(0).alias("tier"))
        .with_columns(pl.col("tier").shift(1).over("_c").fill_null(0).alias("tier_before"))
        .select("_c", "time", "kind", "qualifying", "tier", "tier_before")
    )


def _settle_tiers(
    posted: pl.DataFrame, bonuses: pl.DataFrame, rules: Rules, scale: _Scales, end: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(earns with their points and tier, tier timeline), at the fixed point of earn ↔ tier.

    Each round recomputes only the customers whose earn tiers moved in the previous one.
    """
    fixed = pl.concat(
        [
            bonuses.select("_c", pl.col("effective_at").alias("time"), pl.col("points").alias("delta")),
            bonuses.filter(pl.col("_rev_at").is_not_null()).select(
                "_c", pl.col("_rev_at").alias("time"), (-pl.col("points")).alias("delta")
            ),
        ]
    )
    columns = ["_c", "_o", "earn_at", "rev_at", "earn_numerator", "earn_denominator"]
    active = posted.select(*columns, pl.lit(0, pl.Int32).alias("tier_index"))
    settled: list[pl.DataFrame] = []
    timelines: list[pl.DataFrame] = []
    while active.height:
        earns = active.with_columns(scale.earn_points(pl.col("tier_index")).alias("points"))
        deltas = pl.concat(
            [
                earns.select("_c", pl.col("earn_at").alias("time"), pl.col("points").alias("delta")),
                earns.filter(pl.col("rev_at").is_not_null()).select(
                    "_c", pl.col("rev_at").alias("time"), (-pl.col("points")).alias("delta")
                ),
                fixed.join(active.select("_c").unique(), on="_c", how="semi"),
            ]
        )
        timeline = _tier_timeline(deltas.lazy(), rules, end).collect()
        held = timeline.filter(pl.col("kind") == _INSTANT).select(
            "_c", pl.col("time").alias("earn_at"), pl.col("tier_before").alias("held_tier")
        )
        checked = earns.join(held, on=["_c", "earn_at"], how="left")
        moved = checked.filter(pl.col("held_tier") != pl.col("tier_index")).select("_c").unique()
        settled.append(checked.join(moved, on="_c", how="anti"))
        timelines.append(timeline.join(moved, on="_c", how="anti"))
        active = checked.join(moved, on="_c", how="semi").select(*columns, pl.col("held_tier").alias("tier_index"))
    if not settled:
        empty = pl.LazyFrame(schema={"_c": pl.UInt32, "time": TS, "delta": pl.Int64})
        settled = [posted.select(*columns).with_columns(tier_index=pl.lit(0, pl.Int32), points=pl.lit(0, pl.Int64))]
        timelines = [_tier_timeline(empty, rules, end).collect()]
    return pl.concat(settled).select(*columns, "tier_index", "points"), pl.concat(timelines)


def _tier_history(timeline: pl.DataFrame, customer_ids: pl.Series, tier_names: dict[int, str]) -> pl.DataFrame:
    changes = timeline.filter((pl.col("kind") != _EXIT) & (pl.col("tier") != pl.col("tier_before"))).sort(
        "_c", "time", "kind"
    )
    history = changes.select(
        customer_ids.gather(changes["_c"]).alias("customer_id"),
        pl.col("tier_before").replace_strict(tier_names, return_dtype=pl.String).alias("tier_from"),
        pl.col("tier").replace_strict(tier_names, return_dtype=pl.String).alias("tier_to"),
        pl.col("time").alias("changed_at"),
        pl.when(pl.col("tier") < pl.col("tier_before"))
        .then(pl.lit("monthly_downgrade"))
        .otherwise(pl.lit("upgrade"))
        .alias("reason"),
    )
    return conform(history, TIER_HISTORY_COLUMNS)


# ----------------------------------------------------------------------------------------------------
# FIFO lots, expiry, write-offs.
# ----------------------------------------------------------------------------------------------------


def _expiries(postings: pl.LazyFrame, rules: Rules, end: datetime) -> pl.LazyFrame:
    """The expire entry of every lot with points left `expiry_days` after it became available (≤ end)."""
    expiry = pl.duration(days=rules.expiry_days)
    lots = (
        postings.sort(_ORDER_KEYS)
        .with_row_index("_seq")
        .with_columns(pl.col("points").clip(lower_bound=0).cum_sum().over("_c").alias("_lot_end"))
    )
    candidates = lots.filter((pl.col("points") > 0) & (pl.col("effective_at") + expiry <= end)).select(
        "_c",
        "_o",
        (pl.col("effective_at") + expiry).alias("_time"),
        pl.lit(1, pl.Int8).alias("_kind"),
        "_seq",
        "_lot_end",
        pl.lit(0, pl.Int64).alias("_negative"),
        pl.col("_rank").alias("_lot_rank"),
        "_sub",
        pl.col("rule").alias("_lot_rule"),
    )
    moves = lots.select(
        "_c",
        pl.lit(None, pl.UInt32).alias("_o"),
        pl.col("effective_at").alias("_time"),
        pl.lit(0, pl.Int8).alias("_kind"),
        "_seq",
        pl.lit(None, pl.Int64).alias("_lot_end"),
        (-pl.col("points")).clip(lower_bound=0).alias("_negative"),
        pl.lit(None, pl.Int8).alias("_lot_rank"),
        pl.lit(None, pl.Int8).alias("_sub"),
        pl.lit(None, pl.String).alias("_lot_rule"),
    )
    left_at_expiry = pl.when(pl.col("_kind") == 1).then(pl.col("_lot_end") - pl.col("_consumed")).otherwise(0)
    timeline = (
        pl.concat([moves, candidates])
        .sort("_c", "_time", "_kind", "_seq")
        .with_columns(pl.col("_negative").cum_sum().over("_c").alias("_consumed"))
        .with_columns(left_at_expiry.cum_max().over("_c").alias("_expired"))
        .with_columns((pl.col("_expired") - pl.col("_expired").shift(1).over("_c").fill_null(0)).alias("_amount"))
        .filter((pl.col("_kind") == 1) & (pl.col("_amount") > 0))
    )
    kind = pl.lit("expire", _ENTRY_TYPE)
    return timeline.select(
        "_c",
        "_o",
        kind.alias("entry_type"),
        pl.concat_str(pl.lit("expire:"), pl.col("_lot_rule")).alias("rule"),
        (-pl.col("_amount")).alias("points"),
        pl.col("_time").alias("effective_at"),
        pl.lit(_RANK["expire"], pl.Int8).alias("_rank"),
        "_lot_rank",
        "_sub",
        kind.alias("_origin"),
        pl.lit(None, TS).alias("_rev_at"),
    )


def _expiries_and_write_offs(postings: pl.DataFrame, rules: Rules, end: datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Expire entries and, when balances may not go negative, the adjust entries writing shortfalls off.

    A write-off is a lot the debt consumes at once, so it shifts the lot axis of what follows: each round adds
    the first write-off of every customer still short, and recomputes those customers only.
    """
    write_offs = postings.clear()
    if rules.allow_negative_balance:
        return _expiries(postings.lazy(), rules, end).collect(), write_offs
    settled: list[pl.DataFrame] = []
    active, active_write_offs = postings, write_offs
    while active.height:
        moves = pl.concat([active, active_write_offs])
        expiries = _expiries(moves.lazy(), rules, end).collect()
        balances = (
            pl.concat([moves, expiries])
            .sort(_ORDER_KEYS)
            .with_columns(pl.col("points").cum_sum().over("_c").alias("_balance"))
            .filter(pl.struct("_c", "effective_at").is_last_distinct() & (pl.col("_balance") < 0))
            .group_by("_c")
            .agg(pl.col("effective_at").first(), pl.col("_balance").first())
        )
        rule = pl.concat_str(pl.lit("write_off:"), pl.col("effective_at").dt.to_string("%Y-%m-%dT%H:%M:%S%.6f"))
        rank = pl.lit(_RANK["adjust"], pl.Int8)
        kind = pl.lit("adjust", _ENTRY_TYPE)
        new = balances.select(
            "_c",
            pl.lit(None, pl.UInt32).alias("_o"),
            kind.alias("entry_type"),
            rule.alias("rule"),
            (-pl.col("_balance")).alias("points"),
            "effective_at",
            rank.alias("_rank"),
            rank.alias("_lot_rank"),
            pl.lit(0, pl.Int8).alias("_sub"),
            kind.alias("_origin"),
            pl.lit(None, TS).alias("_rev_at"),
        )
        short = new.select("_c")
        settled.append(pl.concat([expiries, active_write_offs]).join(short, on="_c", how="anti"))
        active = active.join(short, on="_c", how="semi")
        active_write_offs = pl.concat([active_write_offs.join(short, on="_c", how="semi"), new])
    done = pl.concat(settled) if settled else write_offs
    return done.filter(pl.col("entry_type") == "expire"), done.filter(pl.col("entry_type") == "adjust")


# ----------------------------------------------------------------------------------------------------
# Derived tables.
# ----------------------------------------------------------------------------------------------------


def _customer_points(
    prepared: pl.DataFrame,
    customer_ids: pl.Series,
    ledger: pl.DataFrame,
    timeline: pl.DataFrame,
    rules: Rules,
    scale: _Scales,
    end: datetime,
    tier_names: dict[int, str],
) -> pl.DataFrame:
    origin = pl.col("_origin")
    totals = ledger.group_by("_c").agg(
        pl.col("points").sum().alias("balance"),
        pl.col("points").filter(origin.is_in(["earn", "bonus"])).sum().alias("lifetime_earned"),
        (-pl.col("points").filter(origin == "redeem").sum()).alias("lifetime_redeemed"),
        (-pl.col("points").filter(origin == "expire").sum()).alias("lifetime_expired"),
    )
    held = timeline.group_by("_c").agg(
        pl.col("tier").last().alias("tier_index"), pl.col("qualifying").last().alias("qualifying_points")
    )
    customers = (
        pl.DataFrame({"customer_id": customer_ids})
        .with_row_index("_c")
        .join(totals, on="_c", how="left", maintain_order="left")
        .join(held, on="_c", how="left", maintain_order="left")
        .with_columns(pl.col("tier_index").fill_null(0))
    )
    waiting = prepared.filter(pl.col("earns") & (pl.col("delivered_at") <= end) & (pl.col("earn_at") > end)).join(
        customers.select("_c", "tier_index"), on="_c", how="left"
    )
    bonus = pl.sum_horizontal(
        [pl.col(SOURCE_BONUS_COLUMNS[name]).clip(lower_bound=0).fill_null(0) for name in rules.source_bonuses]
        + [pl.when(pl.col("first_earning_order")).then(rules.first_purchase_bonus).otherwise(0)]
    )
    pending = waiting.group_by("_c").agg(
        (scale.earn_points(pl.col("tier_index")) + bonus).sum().alias("pending_points")
    )
    table = customers.join(pending, on="_c", how="left", maintain_order="left").with_columns(
        pl.col("tier_index").replace_strict(tier_names, return_dtype=pl.String).alias("tier"),
        *[
            pl.col(c).fill_null(0)
            for c in (
                "balance",
                "pending_points",
                "lifetime_earned",
                "lifetime_redeemed",
                "lifetime_expired",
                "qualifying_points",
            )
        ],
    )
    return conform(table, CUSTOMER_POINTS_COLUMNS)


def _reconciliation(
    prepared: pl.DataFrame, ledger: pl.DataFrame, timeline: pl.DataFrame, tier_names: dict[int, str]
) -> pl.DataFrame:
    kind = pl.col("entry_type")
    computed = (
        ledger.lazy()
        .filter(kind.is_in(["earn", "bonus"]))
        .group_by("_o")
        .agg(
            pl.col("points").filter(kind == "earn").sum().alias("computed_points"),
            pl.col("points").filter(kind == "bonus").sum().alias("computed_bonus"),
        )
    )
    after = (
        timeline.lazy()
        .filter(pl.col("kind") == _INSTANT)
        .select(
            "_c",
            pl.col("time").alias("earn_at"),
            pl.col("tier").replace_strict(tier_names, return_dtype=pl.String).alias("computed_tier_after"),
        )
    )
    table = (
        prepared.lazy()
        .select("_o", "_c", "order_id", "customer_id", "earn_at", pl.col("^reported_.*$"))
        .join(computed, on="_o", how="left", maintain_order="left")
        .with_columns(pl.when(pl.col("computed_points").is_not_null()).then(pl.col("earn_at")).alias("earn_at"))
        .join(after, on=["_c", "earn_at"], how="left", maintain_order="left")
        .with_columns(
            (pl.col("computed_points") - pl.col("reported_points_earned")).alias("points_earned_difference"),
            (pl.col("computed_points") + pl.col("computed_bonus") - pl.col("reported_points_awarded")).alias(
                "points_awarded_difference"
            ),
            (
                pl.col("computed_tier_after").str.to_lowercase()
                == pl.col("reported_tier_after").str.strip_chars().str.to_lowercase()
            ).alias("tier_after_matches"),
        )
        .collect()
    )
    return conform(table, POINTS_RECONCILIATION_COLUMNS)
