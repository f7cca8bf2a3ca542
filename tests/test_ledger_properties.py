"""The ledger on random order histories: SPEC §5.6 invariants, and equality with a slow reference.

The reference below is deliberately naive: one customer at a time, one instant at a time, exact fractions, a
Python list of FIFO lots, every month start evaluated. It shares no code with `pipelines.ledger`, only the
decisions written in that module's docstring.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.ledger import compute_ledger
from pipelines.rules import SOURCE_BONUS_COLUMNS, Rules
from tests.test_ledger import items_frame, orders_frame, rules_with

WINDOW = timedelta(days=365)
RANK = {"earn": 0, "bonus": 1, "redeem": 2, "reversal": 3, "expire": 4, "adjust": 5}


# ----------------------------------------------------------------------------------------------------
# The reference: an event-by-event simulation.
# ----------------------------------------------------------------------------------------------------


@dataclass
class Lot:
    at: datetime
    order_id: str | None
    rule: str
    size: int
    left: int


@dataclass
class Customer:
    id: str
    entries: list[dict] = field(default_factory=list)
    lots: list[Lot] = field(default_factory=list)
    debt: int = 0
    tier: int = 0
    qualifying: list[tuple[datetime, int]] = field(default_factory=list)
    history: list[tuple] = field(default_factory=list)

    @property
    def balance(self) -> int:
        return sum(e["points"] for e in self.entries)

    def post(self, order_id, entry_type, rule, points, at, origin):
        self.entries.append(
            {
                "customer_id": self.id,
                "order_id": order_id,
                "entry_type": entry_type,
                "rule": rule,
                "points": points,
                "effective_at": at,
                "origin": origin,
            }
        )
        if entry_type == "expire":
            return
        if points > 0:
            paid = min(self.debt, points)
            self.debt -= paid
            self.lots.append(Lot(at, order_id, rule, points, points - paid))
        elif points < 0:
            wanted = -points
            for lot in self.lots:  # the oldest lots first
                taken = min(lot.left, wanted)
                lot.left -= taken
                wanted -= taken
            self.debt += wanted
        assert all(0 <= lot.left <= lot.size for lot in self.lots)

    def window_sum(self, since_exclusive: datetime, until: datetime, include_until: bool) -> int:
        return sum(
            p for at, p in self.qualifying if since_exclusive < at and (at <= until if include_until else at < until)
        )


def tier_of(points: int, rules: Rules) -> int:
    return max(i for i, tier in enumerate(rules.tiers) if tier.min_points <= points) if points >= 0 else 0


def reference(orders: list[dict], items: list[dict], rules: Rules, as_of: date) -> dict:
    end = datetime.combine(as_of, time.max)
    pending = timedelta(days=rules.earn.pending_days)
    lines = defaultdict(list)
    for item in items:
        lines[item["order_id"]].append(item)

    def earn_base(order) -> Fraction:
        net = Fraction(order.get("net_amount_reporting") or 0)
        weighted, total = Fraction(0), Fraction(0)
        for line in lines[order["order_id"]]:
            if line.get("quantity") is not None and line.get("unit_price") is not None:
                weight = Fraction(line["quantity"]) * Fraction(Decimal(str(line["unit_price"])))
            else:
                weight = Fraction(0)
            known = [
                rules.category_multipliers[c] for c in line.get("categories") or [] if c in rules.category_multipliers
            ]
            weighted += weight * Fraction(max(known) if known else 1)
            total += weight
        return net * weighted / total if total > 0 else net

    def earn_points(order, tier: int) -> int:
        return math.floor(
            earn_base(order) * Fraction(rules.tiers[tier].multiplier) * Fraction(rules.earn.points_per_unit)
        )

    def bonuses(order, first: bool) -> list[tuple[str, int]]:
        found = [(f"source:{name}", order.get(SOURCE_BONUS_COLUMNS[name])) for name in rules.source_bonuses]
        found = [(rule, value) for rule, value in found if value is not None and value > 0]
        if first and rules.first_purchase_bonus > 0:
            found.append(("first_purchase", rules.first_purchase_bonus))
        return found

    ledger, history, points_rows, reconciliation = [], [], [], {}
    by_customer = defaultdict(list)
    for order in orders:
        by_customer[order["customer_id"]].append(order)

    for customer_id in sorted(by_customer):
        own = by_customer[customer_id]
        derived = {}
        for o in own:
            cancel_at = o.get("cancelled_at") if o["status"] == "cancelled" else None
            void = o["status"] == "cancelled" and cancel_at is None
            earn_at = (
                o["delivered_at"] + pending
                if o["status"] in ("delivered", "cancelled") and o.get("delivered_at") and not void
                else None
            )
            earns = earn_at is not None and (cancel_at is None or cancel_at > earn_at)
            code = (o.get("coupon_code") or "").strip() or None
            price = None
            if code and o["status"] != "abandoned" and not void and o.get("placed_at") is not None:
                if o.get("coupon_discount") is not None and o["currency"] in rules.fx_rates:
                    value = (
                        Fraction(Decimal(str(o["coupon_discount"])))
                        * Fraction(rules.fx_rates[o["currency"]])
                        * Fraction(rules.redeem.points_per_unit)
                    )
                    price = math.floor(value + Fraction(1, 2))
                elif code in rules.redeem.rewards:
                    price = rules.redeem.rewards[code]
            derived[o["order_id"]] = dict(
                order=o, cancel_at=cancel_at, earn_at=earn_at, earns=earns, code=code, price=price
            )
        earning = sorted((d["earn_at"], oid) for oid, d in derived.items() if d["earns"])
        first = earning[0][1] if earning else None

        # what posts when: (rank, order_id, rule) → how to find its points
        scheduled = defaultdict(list)
        for oid, d in derived.items():
            o = d["order"]
            if d["earns"] and d["earn_at"] <= end:
                scheduled[d["earn_at"]].append(("earn", oid, "earn", None))
                for rule, value in bonuses(o, oid == first):
                    scheduled[d["earn_at"]].append(("bonus", oid, rule, value))
                    if d["cancel_at"] is not None and d["cancel_at"] <= end:
                        scheduled[d["cancel_at"]].append(("reversal", oid, f"reversal:{rule}", None))
                if d["cancel_at"] is not None and d["cancel_at"] <= end:
                    scheduled[d["cancel_at"]].append(("reversal", oid, "reversal:earn", None))
            if d["price"] is not None and o["placed_at"] <= end:
                rule = f"coupon:{d['code']}"
                scheduled[o["placed_at"]].append(("redeem", oid, rule, -d["price"]))
                if d["cancel_at"] is not None:
                    refund_at = max(d["cancel_at"], o["placed_at"])
                    if refund_at <= end:
                        scheduled[refund_at].append(("reversal", oid, f"reversal:{rule}", None))

        c = Customer(customer_id)
        instants = set(scheduled) | {t + timedelta(days=rules.expiry_days) for t in scheduled}
        if scheduled:
            month = min(scheduled).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            while month <= end:
                instants.add(month)
                month = (month + timedelta(days=32)).replace(day=1)
        posted: dict[tuple[str, str], int] = {}
        tier_after: dict[str, int] = {}
        names = [t.name for t in rules.tiers]
        for t in sorted(i for i in instants if i <= end):
            if t == t.replace(day=1, hour=0, minute=0, second=0, microsecond=0):  # month start: re-evaluate
                new = tier_of(c.window_sum(t - WINDOW, t, include_until=False), rules)
                if new != c.tier:
                    reason = "monthly_downgrade" if new < c.tier else "upgrade"
                    c.history.append((customer_id, names[c.tier], names[new], t, reason))
                    c.tier = new
            qualifying_posted = False
            earned_here = []
            for entry_type, oid, rule, value in sorted(scheduled.get(t, []), key=lambda s: (RANK[s[0]], s[1], s[2])):
                if entry_type == "earn":
                    points = earn_points(derived[oid]["order"], c.tier)
                    origin = "earn"
                    earned_here.append(oid)
                elif entry_type == "reversal":
                    reversed_rule = rule.removeprefix("reversal:")
                    points = -posted[(oid, reversed_rule)]
                    origin = (
                        "earn"
                        if reversed_rule == "earn"
                        else ("redeem" if reversed_rule.startswith("coupon:") else "bonus")
                    )
                else:
                    points = value
                    origin = entry_type
                posted[(oid, rule)] = points
                c.post(oid, entry_type, rule, points, t, origin)
                if origin in ("earn", "bonus"):
                    c.qualifying.append((t, points))
                    qualifying_posted = True
            for index, lot in enumerate(c.lots):  # expiries, in lot order
                if lot.at + timedelta(days=rules.expiry_days) == t and lot.left > 0:
                    assert all(older.left == 0 for older in c.lots[:index]), "an expiring lot is not the oldest"
                    c.post(lot.order_id, "expire", f"expire:{lot.rule}", -lot.left, t, "expire")
                    lot.left = 0
            if not rules.allow_negative_balance and c.balance < 0:
                c.post(None, "adjust", "write_off:" + t.strftime("%Y-%m-%dT%H:%M:%S.%f"), -c.balance, t, "adjust")
                assert c.debt == 0
            if qualifying_posted:
                new = max(c.tier, tier_of(c.window_sum(t - WINDOW, t, include_until=True), rules))
                if new > c.tier:
                    c.history.append((customer_id, names[c.tier], names[new], t, "upgrade"))
                    c.tier = new
            for oid in earned_here:
                tier_after[oid] = c.tier

        balance = 0
        for entry in c.entries:
            balance += entry["points"]
            entry["balance_after"] = balance
            entry["entry_id"] = (
                "p_"
                + hashlib.sha256(
                    f"{customer_id}|{entry['order_id'] or ''}|{entry['entry_type']}|{entry['rule']}".encode()
                ).hexdigest()[:24]
            )
        ledger += c.entries
        history += c.history
        waiting = sum(
            earn_points(d["order"], c.tier) + sum(v for _, v in bonuses(d["order"], oid == first))
            for oid, d in derived.items()
            if d["earns"] and d["order"]["delivered_at"] <= end < d["earn_at"]
        )
        points_rows.append(
            (
                customer_id,
                c.balance,
                waiting,
                sum(e["points"] for e in c.entries if e["origin"] in ("earn", "bonus")),
                -sum(e["points"] for e in c.entries if e["origin"] == "redeem"),
                -sum(e["points"] for e in c.entries if e["origin"] == "expire"),
                names[c.tier],
                c.window_sum(end - WINDOW, end, include_until=True),
            )
        )
        for oid in derived:
            own_entries = [e for e in c.entries if e["order_id"] == oid]
            earn = [e["points"] for e in own_entries if e["entry_type"] == "earn"]
            reconciliation[oid] = (
                earn[0] if earn else None,
                sum(e["points"] for e in own_entries if e["entry_type"] == "bonus") if earn else None,
                names[tier_after[oid]] if oid in tier_after else None,
            )
    return {"ledger": ledger, "history": history, "points": points_rows, "reconciliation": reconciliation}


# ----------------------------------------------------------------------------------------------------
# Random histories.
# ----------------------------------------------------------------------------------------------------

BASE = datetime(2023, 1, 1)
# Times bunch at midnight and dates at month starts and a year before them, so that postings, expiries,
# month-start evaluations and exits from the qualifying window fall on the same instant often.
TIMES_OF_DAY = [timedelta(0), timedelta(0), timedelta(hours=9, minutes=30), timedelta(days=1, microseconds=-1)]
MONTH_STARTS = [datetime(2023 + m // 12, m % 12 + 1, 1) for m in range(30)]
ANCHORS = sorted({*MONTH_STARTS, *(d - WINDOW for d in MONTH_STARTS if d - WINDOW >= BASE)})
AMOUNTS = ["0.00", "0.29", "21.60", "99.99", "350.00", "999.99", "1500.00", "3000.00"]


@st.composite
def moments(draw, after: datetime | None = None, max_days: int = 700) -> datetime:
    start = BASE if after is None else after.replace(hour=0, minute=0, second=0, microsecond=0)
    anchors = [a for a in ANCHORS if start <= a <= start + timedelta(days=max_days)]
    days = st.integers(0, max_days).map(lambda n: start + timedelta(days=n))
    day = draw(st.one_of(days, st.sampled_from(anchors)) if anchors else days)
    moment = day + draw(st.sampled_from(TIMES_OF_DAY))
    return max(moment, after) if after is not None else moment


@st.composite
def order_histories(draw, pending_days: int):
    orders, items = [], []
    for customer in draw(st.lists(st.sampled_from(["c1", "c2", "c3"]), min_size=1, max_size=3, unique=True)):
        for n in range(draw(st.integers(1, 8))):
            order_id = f"brevo:{customer}-{n}"
            status = draw(st.sampled_from(["delivered", "delivered", "cancelled", "cancelled", "pending", "abandoned"]))
            placed = draw(moments())
            delivered = cancelled = None
            if status == "delivered" or (status == "cancelled" and draw(st.booleans())):
                delivered = draw(moments(after=placed, max_days=20))
            if status == "cancelled":
                since = delivered or placed
                boundary = since + timedelta(days=pending_days) if delivered else since
                cancelled = draw(st.one_of(st.just(boundary), moments(after=since, max_days=90)))
            amount = draw(st.one_of(st.sampled_from(AMOUNTS), st.decimals(0, 4000, places=2, allow_nan=False).map(str)))
            coupon = draw(st.sampled_from([None, None, "SAVE", "WELCOME", "MYSTERY", " "]))
            discount = draw(st.sampled_from([None, "0.00", "1.25", "35.00", "12.34"])) if coupon == "SAVE" else None
            orders.append(
                {
                    "order_id": order_id,
                    "customer_id": customer,
                    "status": status,
                    "placed_at": placed,
                    "delivered_at": delivered,
                    "cancelled_at": cancelled,
                    "net_amount_reporting": amount,
                    "currency": draw(st.sampled_from(["USD", "BRL"])),
                    "coupon_code": coupon,
                    "coupon_discount": discount,
                    "birthday_bonus": draw(st.sampled_from([None, 0, 50, 500])),
                    "bonus_points": draw(st.sampled_from([None, 25])),
                }
            )
            for line in range(draw(st.integers(0, 3))):
                items.append(
                    {
                        "order_id": order_id,
                        "line_number": line + 1,
                        "categories": draw(st.lists(st.sampled_from(["Luxury", "Eco-Friendly", "Books"]), max_size=2)),
                        "quantity": draw(st.integers(1, 3)),
                        "unit_price": draw(st.sampled_from(["0.00", "9.99", "10.00", "125.50"])),
                    }
                )
    return orders, items


@st.composite
def scenarios(draw):
    pending_days = draw(st.sampled_from([0, 14]))
    rules = rules_with(
        expiry_days=draw(st.sampled_from([30, 90, 365])),
        earn={"pending_days": pending_days},
        allow_negative_balance=draw(st.booleans()),
        first_purchase_bonus=draw(st.sampled_from([0, 100])),
        redeem={"rewards": {"WELCOME": 300}},
    )
    orders, items = draw(order_histories(pending_days))
    # an as-of date on a boundary: the day something posts, expires or leaves the qualifying window
    boundaries = [
        (o[k] + timedelta(days=shift)).date()
        for o in orders
        for k in ("placed_at", "delivered_at", "cancelled_at")
        if o[k] is not None
        for shift in (0, pending_days, rules.expiry_days, 365)
    ]
    as_of = draw(
        st.one_of(st.integers(20, 900).map(lambda n: (BASE + timedelta(days=n)).date()), st.sampled_from(boundaries))
    )
    return orders, items, rules, as_of


# ----------------------------------------------------------------------------------------------------
# Properties.
# ----------------------------------------------------------------------------------------------------


def _fast(orders, items, rules, as_of):
    return compute_ledger(orders_frame(*orders), items_frame(*items), rules, as_of)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_ledger_equals_the_reference_and_keeps_the_invariants(scenario):
    orders, items, rules, as_of = scenario
    result = _fast(orders, items, rules, as_of)
    expected = reference(orders, items, rules, as_of)
    ledger = result.points_ledger
    end = datetime.combine(as_of, time.max)

    # the same ledger, row for row
    columns = [
        "entry_id",
        "customer_id",
        "order_id",
        "entry_type",
        "points",
        "effective_at",
        "rule",
        "balance_after",
    ]
    assert ledger.select(columns).rows() == [tuple(e[c] for c in columns) for e in expected["ledger"]]
    assert result.tier_history.rows() == expected["history"]
    assert result.customer_points.rows() == expected["points"]
    computed = {
        r[0]: r[1:]
        for r in result.reconciliation.select(
            "order_id", "computed_points", "computed_bonus", "computed_tier_after"
        ).rows()
    }
    assert computed == expected["reconciliation"]

    # SPEC §5.6 invariants, checked on the fast result itself
    sums = dict(ledger.group_by("customer_id").agg(pl.col("points").sum()).rows())
    for customer_id, balance in result.customer_points.select("customer_id", "balance").rows():
        assert balance == sums.get(customer_id, 0)
    earns = ledger.filter(pl.col("entry_type") == "earn").group_by("order_id").len()
    assert earns["len"].max() in (None, 1)
    earned = set(earns["order_id"])
    pending = timedelta(days=rules.earn.pending_days)
    for o in orders:
        if o["status"] == "delivered" and o["delivered_at"] + pending <= end:
            assert o["order_id"] in earned
        if o["status"] == "cancelled" and o["cancelled_at"] <= end and o["placed_at"] <= end:
            own = ledger.filter(pl.col("order_id") == o["order_id"], pl.col("entry_type") != "expire")
            assert own["points"].sum() == 0
    lots = {
        (r["customer_id"], r["order_id"], r["rule"]): r["points"]
        for r in ledger.filter(pl.col("points") > 0).iter_rows(named=True)
    }
    for r in ledger.filter(pl.col("entry_type") == "expire").iter_rows(named=True):
        assert 0 < -r["points"] <= lots[(r["customer_id"], r["order_id"], r["rule"].removeprefix("expire:"))]
    assert ledger["entry_id"].n_unique() == ledger.height
    if not rules.allow_negative_balance:  # no instant ends below zero
        closing = ledger.filter(pl.struct("customer_id", "effective_at").is_last_distinct())
        assert (closing["balance_after"] >= 0).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_same_inputs_give_the_same_ledger_whatever_the_row_order(scenario):
    orders, items, rules, as_of = scenario
    first = _fast(orders, items, rules, as_of)
    again = _fast(list(reversed(orders)), list(reversed(items)), rules, as_of)
    assert again.points_ledger.equals(first.points_ledger)
    assert again.customer_points.equals(first.customer_points)
    assert again.tier_history.equals(first.tier_history)
