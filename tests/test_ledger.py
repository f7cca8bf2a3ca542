"""The points ledger on hand-computed histories (SPEC §5)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import polars as pl
import pytest

from pipelines.ledger import (
    CUSTOMER_POINTS_COLUMNS,
    POINTS_LEDGER_COLUMNS,
    POINTS_RECONCILIATION_COLUMNS,
    TIER_HISTORY_COLUMNS,
    compute_ledger,
)
from pipelines.rules import Rules, load_rules
from pipelines.schemas import ORDER_COLUMNS, ORDER_ITEM_COLUMNS, conform
from tests.helpers import one

AS_OF = date(2024, 12, 31)


def orders_frame(*rows: dict) -> pl.DataFrame:
    """core.orders rows: defaults for a delivered USD order, any column of ORDER_COLUMNS may be given."""
    filled = []
    for row in rows:
        row = dict(row)
        row.setdefault("source", "brevo")
        row.setdefault("customer_id", "c1")
        row.setdefault("status", "delivered")
        row.setdefault("currency", "USD")
        row.setdefault("placed_at", row.get("delivered_at"))
        if "net_amount_reporting" in row and row["net_amount_reporting"] is not None:
            row["net_amount_reporting"] = Decimal(str(row["net_amount_reporting"]))
        if row.get("coupon_discount") is not None:
            row["coupon_discount"] = Decimal(str(row["coupon_discount"]))
        filled.append(row)
    frame = pl.DataFrame(filled, infer_schema_length=None) if filled else pl.DataFrame()
    return conform(frame, ORDER_COLUMNS)


def items_frame(*rows: dict) -> pl.DataFrame:
    """core.order_items rows: order_id, line_number, categories, quantity, unit_price."""
    filled = []
    for row in rows:
        row = dict(row)
        row["unit_price"] = Decimal(str(row["unit_price"])) if row.get("unit_price") is not None else None
        row.setdefault("categories", [])
        filled.append(row)
    if not filled:
        return conform(pl.DataFrame(schema={"order_id": pl.String}), ORDER_ITEM_COLUMNS)
    return conform(pl.DataFrame(filled, infer_schema_length=None), ORDER_ITEM_COLUMNS)


def rules_with(**changes) -> Rules:
    """The default rules with some settings replaced (nested settings as dicts, merged)."""
    data = load_rules().model_dump()
    for key, value in changes.items():
        if (
            isinstance(value, dict)
            and isinstance(data.get(key), dict)
            and key not in ("fx_rates", "category_multipliers")
        ):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Rules.model_validate(data)


def run(*orders: dict, items: tuple[dict, ...] = (), rules: Rules | None = None, as_of: date = AS_OF):
    return compute_ledger(orders_frame(*orders), items_frame(*items), rules or load_rules(), as_of)


def entries(result, **where) -> list[tuple]:
    """(entry_type, rule, points, effective_at) of the ledger rows matching `where`, in ledger order."""
    frame = result.points_ledger
    if where:
        frame = frame.filter(pl.all_horizontal([pl.col(k) == v for k, v in where.items()]))
    return [(r["entry_type"], r["rule"], r["points"], r["effective_at"]) for r in frame.iter_rows(named=True)]


def no_bonus(**changes) -> Rules:
    return rules_with(first_purchase_bonus=0, **changes)


# --- earn ---------------------------------------------------------------------------------------------------


def test_gold_tier_brl_order_earns_exactly_27_points():
    # 3000 points in the trailing year make the customer Gold (×1.25) before the BRL order posts.
    result = run(
        {
            "order_id": "bonifiq:0",
            "source": "bonifiq",
            "net_amount_reporting": "3000.00",
            "delivered_at": datetime(2024, 3, 1, 10),
        },
        {
            "order_id": "bonifiq:1",
            "source": "bonifiq",
            "currency": "BRL",
            "net_amount_reporting": "21.60",
            "delivered_at": datetime(2024, 3, 5, 10),
        },  # 120.00 BRL at 0.18
        rules=no_bonus(),
    )
    assert entries(result, order_id="bonifiq:1") == [("earn", "earn", 27, datetime(2024, 3, 5, 10))]
    assert one(result.reconciliation, order_id="bonifiq:1")["computed_tier_after"] == "Gold"


def test_lines_share_the_order_discount_and_take_their_category_multiplier():
    # lines 100 Luxury (×2), 2 × 50 Eco-Friendly (×1.5), 100 Books (×1): weights 100/100/100 of 300,
    # the order-level discount leaves net 240 → each line nets 80: 80×2 + 80×1.5 + 80×1 = 360.
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "240.00", "delivered_at": datetime(2024, 5, 1)},
        items=(
            {
                "order_id": "brevo:1",
                "line_number": 1,
                "categories": ["Luxury", "Fashion"],
                "quantity": 1,
                "unit_price": "100.00",
            },
            {
                "order_id": "brevo:1",
                "line_number": 2,
                "categories": ["Eco-Friendly"],
                "quantity": 2,
                "unit_price": "50.00",
            },
            {
                "order_id": "brevo:1",
                "line_number": 3,
                "categories": ["Books"],
                "quantity": 1,
                "unit_price": "100.00",
            },
        ),
        rules=no_bonus(),
    )
    assert entries(result) == [("earn", "earn", 360, datetime(2024, 5, 1))]


def test_earn_is_exact_where_floats_or_rounding_line_shares_would_lose_a_point():
    # three equal Luxury (×3) lines share 100.00: exactly 100/3 × 3 each → 300 (shares rounded to cents first
    # would give 3 × 33.33 × 3 = 299.97 → 299)
    lines = tuple(
        {
            "order_id": "brevo:1",
            "line_number": n,
            "categories": ["Luxury"],
            "quantity": 1,
            "unit_price": "10.00",
        }
        for n in (1, 2, 3)
    )
    rules = no_bonus(category_multipliers={"Luxury": Decimal("3")})
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "100.00", "delivered_at": datetime(2024, 5, 1)},
        items=lines,
        rules=rules,
    )
    assert entries(result)[0][2] == 300
    # 0.29 × 100 points per unit is 28.999999999999996 in binary floating point
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "0.29", "delivered_at": datetime(2024, 5, 1)},
        rules=no_bonus(earn={"points_per_unit": Decimal("100")}),
    )
    assert entries(result)[0][2] == 29


def test_upgrade_mid_stream_changes_the_next_orders_multiplier():
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "999.99", "delivered_at": datetime(2024, 2, 1)},
        {"order_id": "brevo:2", "net_amount_reporting": "100.00", "delivered_at": datetime(2024, 2, 10)},
        {"order_id": "brevo:3", "net_amount_reporting": "100.00", "delivered_at": datetime(2024, 2, 20)},
        rules=no_bonus(),
    )
    # 999 points: Bronze; brevo:2 earns 100 at ×1.0 → 1099: Silver; brevo:3 earns at ×1.1 → 110
    assert [e[2] for e in entries(result, entry_type="earn")] == [999, 100, 110]
    assert result.tier_history.rows() == [("c1", "Bronze", "Silver", datetime(2024, 2, 10), "upgrade")]
    assert one(result.customer_points, customer_id="c1")["tier"] == "Silver"


def test_orders_of_one_instant_do_not_change_each_others_multiplier():
    at = datetime(2024, 2, 1, 12)
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "2000.00", "delivered_at": at},
        {"order_id": "brevo:2", "net_amount_reporting": "100.00", "delivered_at": at},
        rules=no_bonus(),
    )
    assert [e[2] for e in entries(result, entry_type="earn")] == [2000, 100]


# --- bonuses ------------------------------------------------------------------------------------------------


def test_first_purchase_bonus_and_source_bonuses_post_with_the_earn_unmultiplied():
    result = run(
        {
            "order_id": "brevo:0",
            "net_amount_reporting": "3000.00",
            "delivered_at": datetime(2024, 1, 5),
            "placed_at": datetime(2024, 1, 1),
        },
        {
            "order_id": "brevo:1",
            "net_amount_reporting": "100.00",
            "delivered_at": datetime(2024, 2, 1),
            "birthday_bonus": 500,
            "referral_bonus": 250,
            "subscription_bonus": 0,
            "bonus_points": 50,
        },
    )
    assert entries(result, order_id="brevo:0") == [
        ("earn", "earn", 3000, datetime(2024, 1, 5)),
        ("bonus", "first_purchase", 100, datetime(2024, 1, 5)),
    ]
    assert entries(result, order_id="brevo:1") == [
        ("earn", "earn", 125, datetime(2024, 2, 1)),  # Gold ×1.25
        ("bonus", "source:birthdayBonus", 500, datetime(2024, 2, 1)),
        ("bonus", "source:bonusPoints", 50, datetime(2024, 2, 1)),
        ("bonus", "source:referralBonus", 250, datetime(2024, 2, 1)),
    ]
    assert one(result.reconciliation, order_id="brevo:1")["computed_bonus"] == 800


def test_source_bonuses_not_named_in_the_rules_do_not_post():
    result = run(
        {
            "order_id": "brevo:1",
            "net_amount_reporting": "10.00",
            "delivered_at": datetime(2024, 2, 1),
            "birthday_bonus": 500,
            "bonus_points": 50,
        },
        rules=no_bonus(source_bonuses=["bonusPoints"]),
    )
    assert [e[1] for e in entries(result)] == ["earn", "source:bonusPoints"]


def test_first_purchase_bonus_is_reversed_with_its_order_and_not_inherited():
    result = run(
        {
            "order_id": "brevo:1",
            "status": "cancelled",
            "net_amount_reporting": "50.00",
            "delivered_at": datetime(2024, 3, 1),
            "cancelled_at": datetime(2024, 3, 20),
        },
        {"order_id": "brevo:2", "net_amount_reporting": "40.00", "delivered_at": datetime(2024, 3, 10)},
    )
    assert entries(result, order_id="brevo:1") == [
        ("earn", "earn", 50, datetime(2024, 3, 1)),
        ("bonus", "first_purchase", 100, datetime(2024, 3, 1)),
        ("reversal", "reversal:earn", -50, datetime(2024, 3, 20)),
        ("reversal", "reversal:first_purchase", -100, datetime(2024, 3, 20)),
    ]
    assert entries(result, order_id="brevo:2") == [("earn", "earn", 40, datetime(2024, 3, 10))]
    assert one(result.customer_points, customer_id="c1")["balance"] == 40


def test_an_order_cancelled_before_its_earn_is_not_the_first_purchase():
    result = run(
        {
            "order_id": "brevo:1",
            "status": "cancelled",
            "net_amount_reporting": "50.00",
            "delivered_at": datetime(2024, 3, 1),
            "cancelled_at": datetime(2024, 3, 1),
        },
        {"order_id": "brevo:2", "net_amount_reporting": "40.00", "delivered_at": datetime(2024, 3, 10)},
    )
    assert entries(result, order_id="brevo:1") == []
    assert [e[1] for e in entries(result, order_id="brevo:2")] == ["earn", "first_purchase"]


# --- redemption ---------------------------------------------------------------------------------------------


def test_coupon_redemptions_valued_catalogued_and_unpriced():
    rules = no_bonus(redeem={"rewards": {"WELCOME": 300}})
    placed = datetime(2024, 1, 25, 14, 30)
    result = run(
        {
            "order_id": "brevo:1",
            "status": "pending",
            "placed_at": placed,
            "coupon_code": "SAVE10",
            "coupon_discount": "35.00",
        },
        {
            "order_id": "bonifiq:2",
            "source": "bonifiq",
            "status": "pending",
            "placed_at": placed,
            "coupon_code": "WELCOME",
            "currency": "BRL",
        },
        {
            "order_id": "bonifiq:3",
            "source": "bonifiq",
            "status": "pending",
            "placed_at": placed,
            "coupon_code": "MYSTERY",
            "currency": "BRL",
        },
        {
            "order_id": "brevo:4",
            "status": "abandoned",
            "placed_at": placed,
            "coupon_code": "SAVE10",
            "coupon_discount": "35.00",
        },
        {
            "order_id": "bonifiq:5",
            "source": "bonifiq",
            "status": "pending",
            "placed_at": placed,
            "coupon_code": "SAVE5",
            "coupon_discount": "10.01",
            "currency": "BRL",
        },  # 10.01 × 0.18 × 20 = 36.036
        rules=rules,
    )
    assert entries(result, order_id="brevo:1") == [("redeem", "coupon:SAVE10", -700, placed)]
    assert entries(result, order_id="bonifiq:2") == [("redeem", "coupon:WELCOME", -300, placed)]
    assert entries(result, order_id="bonifiq:3") == []
    assert entries(result, order_id="brevo:4") == []
    assert entries(result, order_id="bonifiq:5") == [("redeem", "coupon:SAVE5", -36, placed)]
    assert result.unpriced_redemption_count == 1
    assert result.unpriced_redemptions.rows() == [("bonifiq:3", "c1", "MYSTERY", placed)]
    assert one(result.customer_points, customer_id="c1")["lifetime_redeemed"] == 1036


def test_redemption_value_rounds_half_up():
    # 0.025 USD-worth? coupon 1.25 BRL × 0.18 × 20 = 4.5 → 5 points (half up, not to even)
    result = run(
        {
            "order_id": "bonifiq:1",
            "source": "bonifiq",
            "status": "pending",
            "placed_at": datetime(2024, 1, 1),
            "coupon_code": "X",
            "coupon_discount": "1.25",
            "currency": "BRL",
        },
        rules=no_bonus(),
    )
    assert entries(result)[0][2] == -5


def test_return_after_redemption_goes_negative_and_a_later_earn_nets_it_off():
    result = run(
        {
            "order_id": "brevo:1",
            "status": "cancelled",
            "net_amount_reporting": "800.00",
            "delivered_at": datetime(2024, 1, 10),
            "cancelled_at": datetime(2024, 3, 1),
        },
        {
            "order_id": "brevo:2",
            "status": "pending",
            "placed_at": datetime(2024, 2, 1),
            "coupon_code": "SAVE10",
            "coupon_discount": "35.00",
        },
        {"order_id": "brevo:3", "net_amount_reporting": "1000.00", "delivered_at": datetime(2024, 4, 1)},
        rules=no_bonus(),
    )
    rows = result.points_ledger.select("order_id", "entry_type", "points", "balance_after").rows()
    assert rows == [
        ("brevo:1", "earn", 800, 800),
        ("brevo:2", "redeem", -700, 100),
        ("brevo:1", "reversal", -800, -700),  # the return takes the balance below zero
        ("brevo:3", "earn", 1000, 300),  # the next earn pays the debt first
    ]
    # the debt consumed 700 of brevo:3's lot: only 300 are left to expire a year later
    later = run(
        {
            "order_id": "brevo:1",
            "status": "cancelled",
            "net_amount_reporting": "800.00",
            "delivered_at": datetime(2024, 1, 10),
            "cancelled_at": datetime(2024, 3, 1),
        },
        {
            "order_id": "brevo:2",
            "status": "pending",
            "placed_at": datetime(2024, 2, 1),
            "coupon_code": "SAVE10",
            "coupon_discount": "35.00",
        },
        {"order_id": "brevo:3", "net_amount_reporting": "1000.00", "delivered_at": datetime(2024, 4, 1)},
        rules=no_bonus(),
        as_of=date(2025, 6, 1),
    )
    assert entries(later, entry_type="expire") == [
        ("expire", "expire:earn", -300, datetime(2025, 4, 1)),
    ]
    assert one(later.customer_points, customer_id="c1")["balance"] == 0


def test_negative_balance_is_written_off_when_not_allowed():
    result = run(
        {
            "order_id": "brevo:1",
            "status": "cancelled",
            "net_amount_reporting": "800.00",
            "delivered_at": datetime(2024, 1, 10),
            "cancelled_at": datetime(2024, 3, 1),
        },
        {
            "order_id": "brevo:2",
            "status": "pending",
            "placed_at": datetime(2024, 2, 1),
            "coupon_code": "SAVE10",
            "coupon_discount": "35.00",
        },
        {"order_id": "brevo:3", "net_amount_reporting": "1000.00", "delivered_at": datetime(2024, 4, 1)},
        rules=no_bonus(allow_negative_balance=False),
    )
    rows = result.points_ledger.select("order_id", "entry_type", "rule", "points", "balance_after").rows()
    assert rows == [
        ("brevo:1", "earn", "earn", 800, 800),
        ("brevo:2", "redeem", "coupon:SAVE10", -700, 100),
        ("brevo:1", "reversal", "reversal:earn", -800, -700),
        (None, "adjust", "write_off:2024-03-01T00:00:00.000000", 700, 0),
        ("brevo:3", "earn", "earn", 1000, 1000),
    ]


# --- reversal -----------------------------------------------------------------------------------------------


def test_a_cancel_reverses_every_entry_of_the_order_once_and_the_ledger_is_idempotent():
    orders = (
        {
            "order_id": "brevo:1",
            "status": "cancelled",
            "net_amount_reporting": "500.00",
            "placed_at": datetime(2024, 4, 1),
            "delivered_at": datetime(2024, 4, 3),
            "cancelled_at": datetime(2024, 4, 20),
            "coupon_code": "SAVE10",
            "coupon_discount": "35.00",
            "birthday_bonus": 200,
        },
    )
    result = run(*orders)
    assert entries(result) == [
        ("redeem", "coupon:SAVE10", -700, datetime(2024, 4, 1)),
        ("earn", "earn", 500, datetime(2024, 4, 3)),
        ("bonus", "first_purchase", 100, datetime(2024, 4, 3)),
        ("bonus", "source:birthdayBonus", 200, datetime(2024, 4, 3)),
        ("reversal", "reversal:coupon:SAVE10", 700, datetime(2024, 4, 20)),
        ("reversal", "reversal:earn", -500, datetime(2024, 4, 20)),
        ("reversal", "reversal:first_purchase", -100, datetime(2024, 4, 20)),
        ("reversal", "reversal:source:birthdayBonus", -200, datetime(2024, 4, 20)),
    ]
    assert result.points_ledger["points"].sum() == 0
    again = run(*orders)
    for name in (
        "points_ledger",
        "customer_points",
        "tier_history",
        "reconciliation",
        "unpriced_redemptions",
    ):
        assert getattr(again, name).equals(getattr(result, name)), name


def test_entry_ids_are_stable_and_unique():
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "10.00", "delivered_at": datetime(2024, 1, 1)},
        {"order_id": "brevo:2", "net_amount_reporting": "10.00", "delivered_at": datetime(2024, 1, 1)},
        as_of=date(2024, 6, 30),
    )
    ids = result.points_ledger["entry_id"].to_list()
    assert len(set(ids)) == len(ids) == 3
    import hashlib

    expected = "p_" + hashlib.sha256(b"c1|brevo:1|earn|earn").hexdigest()[:24]
    assert (
        result.points_ledger.filter(pl.col("order_id") == "brevo:1", pl.col("entry_type") == "earn")["entry_id"].item()
        == expected
    )


# --- expiry -------------------------------------------------------------------------------------------------


def test_a_partly_consumed_lot_expires_its_remainder_fifo():
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "300.00", "delivered_at": datetime(2024, 1, 1, 9)},
        {"order_id": "brevo:2", "net_amount_reporting": "200.00", "delivered_at": datetime(2024, 1, 15, 9)},
        {
            "order_id": "brevo:3",
            "status": "pending",
            "placed_at": datetime(2024, 1, 20),
            "coupon_code": "SAVE",
            "coupon_discount": "20.00",
        },  # 400 points: all of lot 1 (300), 100 of lot 2
        rules=no_bonus(expiry_days=60),
    )
    assert entries(result, entry_type="expire") == [
        ("expire", "expire:earn", -100, datetime(2024, 3, 15, 9)),  # lot 2's remainder; lot 1 is used up
    ]
    assert one(result.points_ledger, entry_type="expire")["order_id"] == "brevo:2"
    assert one(result.customer_points, customer_id="c1")["lifetime_expired"] == 100
    assert one(result.customer_points, customer_id="c1")["balance"] == 0


def test_expiry_after_the_as_of_date_does_not_post():
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "300.00", "delivered_at": datetime(2024, 1, 1, 9)},
        rules=no_bonus(expiry_days=60),
        as_of=date(2024, 3, 1),  # expires 2024-03-01 09:00 … still on D: posts
    )
    assert entries(result, entry_type="expire") == [("expire", "expire:earn", -300, datetime(2024, 3, 1, 9))]
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "300.00", "delivered_at": datetime(2024, 1, 1, 9)},
        rules=no_bonus(expiry_days=60),
        as_of=date(2024, 2, 29),
    )
    assert entries(result, entry_type="expire") == []


# --- tiers --------------------------------------------------------------------------------------------------


def test_downgrade_waits_for_the_first_of_the_month():
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "1200.00", "delivered_at": datetime(2024, 3, 10)},
        {
            "order_id": "brevo:2",
            "status": "cancelled",
            "net_amount_reporting": "1500.00",
            "delivered_at": datetime(2024, 4, 5),
            "cancelled_at": datetime(2024, 4, 15),
        },
        {"order_id": "brevo:3", "net_amount_reporting": "100.00", "delivered_at": datetime(2024, 4, 20)},
        rules=no_bonus(),
        as_of=date(2024, 5, 31),
    )
    # 1200 → Silver; +1650 (×1.1) → Gold on 5 April; the return on 15 April drops qualifying to 1200 but the
    # tier holds: brevo:3 still earns at ×1.25 on 20 April. On 1 May the evaluation finds 1325 → Silver.
    assert [e[2] for e in entries(result, entry_type="earn")] == [1200, 1650, 125]
    assert result.tier_history.rows() == [
        ("c1", "Bronze", "Silver", datetime(2024, 3, 10), "upgrade"),
        ("c1", "Silver", "Gold", datetime(2024, 4, 5), "upgrade"),
        ("c1", "Gold", "Silver", datetime(2024, 5, 1), "monthly_downgrade"),
    ]
    assert one(result.customer_points, customer_id="c1")["tier"] == "Silver"
    assert one(result.customer_points, customer_id="c1")["qualifying_points"] == 1325
    mid_month = run(
        {"order_id": "brevo:1", "net_amount_reporting": "1200.00", "delivered_at": datetime(2024, 3, 10)},
        {
            "order_id": "brevo:2",
            "status": "cancelled",
            "net_amount_reporting": "1500.00",
            "delivered_at": datetime(2024, 4, 5),
            "cancelled_at": datetime(2024, 4, 15),
        },
        rules=no_bonus(),
        as_of=date(2024, 4, 30),
    )
    assert one(mid_month.customer_points, customer_id="c1")["tier"] == "Gold"


def test_points_leaving_the_trailing_year_downgrade_on_the_next_month_start():
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "1000.00", "delivered_at": datetime(2023, 6, 15, 12)},
        rules=no_bonus(expiry_days=1000),
        as_of=date(2024, 7, 31),
    )
    assert result.tier_history.rows() == [
        ("c1", "Bronze", "Silver", datetime(2023, 6, 15, 12), "upgrade"),
        ("c1", "Silver", "Bronze", datetime(2024, 7, 1), "monthly_downgrade"),  # left the window 14 June 2024
    ]
    assert one(result.customer_points, customer_id="c1")["qualifying_points"] == 0
    assert one(result.customer_points, customer_id="c1")["balance"] == 1000


def test_points_leave_the_window_365_days_after_they_post():
    # 2023-06-02 00:00 + 365 days = 2024-06-01 00:00 (2024 is a leap year): out of the window exactly at the
    # month start, so that evaluation already downgrades
    order = {"order_id": "brevo:1", "net_amount_reporting": "1000.00", "delivered_at": datetime(2023, 6, 2)}
    result = run(order, rules=no_bonus(expiry_days=1000), as_of=date(2024, 6, 30))
    assert result.tier_history.rows() == [
        ("c1", "Bronze", "Silver", datetime(2023, 6, 2), "upgrade"),
        ("c1", "Silver", "Bronze", datetime(2024, 6, 1), "monthly_downgrade"),
    ]
    before = one(run(order, rules=no_bonus(), as_of=date(2024, 5, 31)).customer_points, customer_id="c1")
    after = one(run(order, rules=no_bonus(), as_of=date(2024, 6, 1)).customer_points, customer_id="c1")
    assert (before["qualifying_points"], before["tier"]) == (1000, "Silver")
    assert (after["qualifying_points"], after["tier"]) == (0, "Bronze")


def test_a_redemption_at_the_instant_a_lot_expires_uses_the_lot_first():
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "100.00", "delivered_at": datetime(2024, 1, 1)},
        {
            "order_id": "brevo:2",
            "status": "pending",
            "placed_at": datetime(2024, 1, 31),
            "coupon_code": "X",
            "coupon_discount": "2.00",
        },
        rules=no_bonus(expiry_days=30),
    )
    assert entries(result) == [
        ("earn", "earn", 100, datetime(2024, 1, 1)),
        ("redeem", "coupon:X", -40, datetime(2024, 1, 31)),
        ("expire", "expire:earn", -60, datetime(2024, 1, 31)),
    ]


# --- pending ------------------------------------------------------------------------------------------------


def test_pending_points_wait_and_a_cancel_before_they_are_available_voids_them():
    rules = rules_with(earn={"pending_days": 14})
    result = run(
        {"order_id": "brevo:1", "net_amount_reporting": "100.00", "delivered_at": datetime(2024, 12, 20)},
        {
            "order_id": "brevo:2",
            "status": "cancelled",
            "net_amount_reporting": "70.00",
            "delivered_at": datetime(2024, 12, 1),
            "cancelled_at": datetime(2024, 12, 10),
        },
        {
            "order_id": "brevo:3",
            "net_amount_reporting": "50.00",
            "delivered_at": datetime(2024, 11, 1),
            "birthday_bonus": 20,
        },
        rules=rules,
    )
    assert entries(result, order_id="brevo:2") == []  # cancelled within the pending period: never earns
    assert entries(result, order_id="brevo:3") == [
        ("earn", "earn", 50, datetime(2024, 11, 15)),
        ("bonus", "first_purchase", 100, datetime(2024, 11, 15)),
        ("bonus", "source:birthdayBonus", 20, datetime(2024, 11, 15)),
    ]
    assert entries(result, order_id="brevo:1") == []  # available on 3 January
    points = one(result.customer_points, customer_id="c1")
    assert (points["balance"], points["pending_points"]) == (170, 100)


# --- as-of boundary -----------------------------------------------------------------------------------------


def test_the_as_of_date_covers_the_whole_day_and_nothing_after():
    result = run(
        {
            "order_id": "brevo:1",
            "net_amount_reporting": "10.00",
            "delivered_at": datetime(2024, 12, 31, 23, 59),
        },
        {"order_id": "brevo:2", "net_amount_reporting": "20.00", "delivered_at": datetime(2025, 1, 1, 0, 0)},
        {
            "order_id": "brevo:3",
            "status": "pending",
            "placed_at": datetime(2025, 1, 1),
            "coupon_code": "SAVE10",
            "coupon_discount": "35.00",
        },
        rules=no_bonus(),
    )
    assert entries(result) == [("earn", "earn", 10, datetime(2024, 12, 31, 23, 59))]
    assert result.unpriced_redemption_count == 0


def test_balance_after_is_the_running_sum_and_customers_are_independent():
    result = run(
        {
            "order_id": "brevo:1",
            "customer_id": "c1",
            "net_amount_reporting": "10.00",
            "delivered_at": datetime(2024, 1, 1),
        },
        {
            "order_id": "brevo:2",
            "customer_id": "c2",
            "net_amount_reporting": "20.00",
            "delivered_at": datetime(2024, 1, 2),
        },
        {
            "order_id": "brevo:3",
            "customer_id": "c1",
            "status": "pending",
            "placed_at": datetime(2024, 2, 1),
            "coupon_code": "X",
            "coupon_discount": "1.00",
        },
        {
            "order_id": "brevo:4",
            "customer_id": "c1",
            "net_amount_reporting": "5.00",
            "delivered_at": datetime(2024, 3, 1),
        },
        as_of=date(2024, 6, 30),
    )
    ledger = result.points_ledger
    assert ledger.columns == list(POINTS_LEDGER_COLUMNS)
    assert ledger.filter(pl.col("customer_id") == "c1")["balance_after"].to_list() == [10, 110, 90, 95]
    assert ledger.filter(pl.col("customer_id") == "c2")["balance_after"].to_list() == [20, 120]
    assert result.customer_points.select("customer_id", "balance").rows() == [("c1", 95), ("c2", 120)]


def test_output_column_sets():
    result = run({"order_id": "brevo:1", "net_amount_reporting": "10.00", "delivered_at": datetime(2024, 1, 1)})
    assert result.customer_points.schema == pl.Schema(CUSTOMER_POINTS_COLUMNS)
    assert result.tier_history.schema == pl.Schema(TIER_HISTORY_COLUMNS)
    assert result.reconciliation.schema == pl.Schema(POINTS_RECONCILIATION_COLUMNS)


def test_reconciliation_compares_reported_figures():
    result = run(
        {
            "order_id": "brevo:1",
            "net_amount_reporting": "353.00",
            "delivered_at": datetime(2024, 1, 25),
            "reported_points_earned": 353,
            "reported_points_awarded": 403,
            "reported_tier_after": "gold",
            "bonus_points": 50,
        },
        rules=no_bonus(),
    )
    row = one(result.reconciliation, order_id="brevo:1")
    assert (
        row["computed_points"],
        row["computed_bonus"],
        row["points_earned_difference"],
        row["points_awarded_difference"],
        row["computed_tier_after"],
        row["tier_after_matches"],
    ) == (353, 50, 0, 0, "Bronze", False)


def test_unknown_source_bonus_names_are_rejected():
    with pytest.raises(ValueError, match="unknown source bonus"):
        rules_with(source_bonuses=["loyaltyPointsAwarded"])


def test_no_orders_gives_empty_tables():
    result = compute_ledger(orders_frame(), items_frame(), load_rules(), AS_OF)
    assert result.points_ledger.height == 0
    assert result.customer_points.height == 0
    assert result.points_ledger.schema == pl.Schema(POINTS_LEDGER_COLUMNS)
