"""The marts of SPEC §6 on a small hand-made warehouse, against figures computed by hand.

As of 2024-12-31 with the default rules, the RFM window (730 days, the as-of date included) starts on
2023-01-02. Six customers have delivered orders in it:

| customer | delivered orders in the window (placed)                | recency | F  | monetary |
|----------|--------------------------------------------------------|---------|----|----------|
| c1       | 6: 2023-02-01 .. 2024-12-20                            | 11      | 6  | 350.00   |
| c2       | 1: 2024-12-25                                          | 6       | 1  | 200.00   |
| c3       | 2: 2024-10-01, 2024-12-20                              | 11      | 2  | 200.00   |
| c4       | 1: 2024-01-15 (plus one before the window, one cancel) | 351     | 1  | 30.00    |
| c5       | 3: 2023-01-02 (first day of the window) .. 2023-04-01  | 640     | 3  | 30.00    |
| c6       | 4: two on 2024-07-01, 2024-08-01, 2024-09-01           | 121     | 4  | 100.00   |

c7 has only a pending order, an abandoned cart and a delivered order placed after the as-of date: not scored.
Scores, 1 + floor(5 × strictly-worse ÷ 6): R (worse = larger recency) c2 5; c1, c3 3 (tie, 3 worse); c6 2;
c4, c5 1. M (worse = smaller monetary) c1 5; c2, c3 3 (tie); c6 2; c4, c5 1 (tie). F by bins [1, 2, 3, 5].
"""

from __future__ import annotations

import re
import time
from calendar import monthrange
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.helpers import query
from tests.test_dbt_project import CORE_COLUMNS, MART_MODELS, create_core, run_dbt_build

AS_OF = "2024-12-31"
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"\+?\d[\d\s().-]{7,}\d")
PII_COLUMN = re.compile(r"email|phone|name|document|cpf|cnpj", re.IGNORECASE)


def _order(order_id: str, customer_id: str, placed: datetime, amount: str, status: str = "delivered", **extra) -> dict:
    row = {
        "order_id": order_id,
        "customer_id": customer_id,
        "source": order_id.split(":")[0],
        "source_order_id": order_id.split(":")[1],
        "status": status,
        "placed_at": placed,
        "currency": "USD",
        "net_amount": Decimal(amount),
        "net_amount_reporting": Decimal(amount),
        "source_file": f"{order_id.split(':')[0]}/orders.json",
    }
    if status == "delivered":
        row["delivered_at"] = placed.replace(hour=20)
    if status == "cancelled":
        row["cancelled_at"] = placed.replace(hour=21)
    row.update(extra)
    return row


def _orders() -> pl.DataFrame:
    d = datetime
    rows = [
        # c1: six delivered orders in the window
        _order("brevo:1", "c1", d(2023, 2, 1, 9), "50.00", campaign="launch", referrer="google"),
        _order("brevo:2", "c1", d(2023, 6, 1, 9), "50.00"),
        _order("brevo:3", "c1", d(2023, 11, 15, 10), "50.00"),
        _order("brevo:4", "c1", d(2024, 6, 1, 9), "50.00"),
        _order("brevo:5", "c1", d(2024, 11, 5, 9), "50.00", coupon_code="SAVE5", coupon_discount=Decimal("5.00")),
        _order("brevo:6", "c1", d(2024, 12, 20, 9), "100.00"),
        # c2: one recent order from a campaign
        _order("esputnik:E1", "c2", d(2024, 12, 25, 8), "200.00", campaign="xmas", referrer="instagram"),
        # c3
        _order("bonifiq:B1", "c3", d(2024, 10, 1, 12), "80.00"),
        _order("bonifiq:B2", "c3", d(2024, 12, 20, 23, 59), "120.00"),
        # c4: one order in the window; one before it; a cancelled (returned) one that never counts
        _order("brevo:40", "c4", d(2024, 1, 15, 10), "30.00", campaign="xmas", referrer="instagram"),
        _order("brevo:41", "c4", d(2023, 1, 1, 23, 59), "999.00"),
        _order("brevo:42", "c4", d(2024, 12, 30, 10), "500.00", status="cancelled", delivered_at=d(2024, 12, 30, 15)),
        # c5: the first order is on the first day of the window, at midnight
        _order("esputnik:E50", "c5", d(2023, 1, 2, 0), "10.00"),
        _order("esputnik:E51", "c5", d(2023, 3, 1, 10), "10.00"),
        _order("esputnik:E52", "c5", d(2023, 4, 1, 10), "10.00"),
        # c6: two orders on one day count as two orders
        _order("bonifiq:B60", "c6", d(2024, 7, 1, 9), "25.00"),
        _order("bonifiq:B61", "c6", d(2024, 7, 1, 18), "25.00"),
        _order("bonifiq:B62", "c6", d(2024, 8, 1, 9), "25.00"),
        _order("bonifiq:B63", "c6", d(2024, 9, 1, 9), "25.00"),
        # c7: nothing that scores
        _order("brevo:70", "c7", d(2024, 12, 10, 9), "70.00", status="pending"),
        _order("esputnik:E70", "c7", d(2024, 12, 11, 9), "35.00", status="abandoned"),
        _order("brevo:71", "c7", d(2025, 1, 1, 0), "80.00"),
    ]
    return pl.DataFrame(rows, infer_schema_length=None)


def _customers() -> pl.DataFrame:
    contacts = {
        "c1": {"email": "ana@example.com", "phone": "+5511999990001", "first_name": "Ana", "last_name": "Silva"},
        "c2": {"email": "bo@example.com", "first_name": "Bo"},
        "c3": {"document_hash": "9f2c", "first_name": "Caio"},
        "c4": {"phone": "+380501234567"},
        "c5": {"email": "eve@example.org"},
        "c6": {"document_hash": "77aa"},
        "c7": {"email": "zed@example.net", "phone": "+14155550123"},
    }
    return pl.DataFrame(
        [
            {
                "customer_id": customer_id,
                **contact,
                "first_seen_at": datetime(2023, 1, 1),
                "sources": ["brevo"],
                "source_customer_ids": [f"brevo:{customer_id}"],
            }
            for customer_id, contact in contacts.items()
        ],
        infer_schema_length=None,
    )


def _ledger() -> pl.DataFrame:
    """c4 joins in Jan 2024 (Bronze); c1 earns 1,000 in Nov 2023 (Silver), redeems and loses points in Nov 2024,
    is downgraded on 2024-12-01; c2 joins in Dec 2024."""
    d = datetime
    entries = [
        ("c4", "brevo:40", "earn", 30, d(2024, 1, 15, 20), "earn"),
        ("c4", "brevo:40", "bonus", 100, d(2024, 1, 15, 20), "first_purchase"),
        ("c1", "brevo:3", "earn", 1000, d(2023, 11, 15, 20), "earn"),
        ("c1", "brevo:5", "earn", 200, d(2024, 11, 5, 20), "earn"),
        ("c1", "brevo:5", "bonus", 50, d(2024, 11, 5, 20), "source:birthdayBonus"),
        ("c1", "brevo:5", "redeem", -100, d(2024, 11, 10, 9), "coupon:SAVE5"),
        ("c1", "brevo:3", "expire", -40, d(2024, 11, 20, 0), "expire:earn"),
        ("c2", "esputnik:E1", "earn", 200, d(2024, 12, 25, 20), "earn"),
        ("c2", "esputnik:E1", "bonus", 100, d(2024, 12, 25, 20), "first_purchase"),
    ]
    frame = pl.DataFrame(
        entries, schema=["customer_id", "order_id", "entry_type", "points", "effective_at", "rule"], orient="row"
    ).sort("customer_id", "effective_at")
    return frame.with_columns(
        (pl.lit("p_") + pl.int_range(pl.len()).cast(pl.String)).alias("entry_id"),
        pl.col("points").cum_sum().over("customer_id").alias("balance_after"),
    )


def _tier_history() -> pl.DataFrame:
    return pl.DataFrame(
        [
            ("c1", "Bronze", "Silver", datetime(2023, 11, 15, 20), "upgrade"),
            ("c1", "Silver", "Bronze", datetime(2024, 12, 1), "monthly_downgrade"),
        ],
        schema=["customer_id", "tier_from", "tier_to", "changed_at", "reason"],
        orient="row",
    )


def _customer_points() -> pl.DataFrame:
    return pl.DataFrame(
        [
            ("c1", 1110, 0, 1250, 100, 40, "Bronze", 250),
            ("c2", 300, 0, 300, 0, 0, "Bronze", 300),
            ("c4", 130, 0, 130, 0, 0, "Bronze", 130),
        ],
        schema=[
            "customer_id", "balance", "pending_points", "lifetime_earned", "lifetime_redeemed",
            "lifetime_expired", "tier", "qualifying_points",
        ],
        orient="row",
    )  # fmt: skip


def _points_reconciliation() -> pl.DataFrame:
    return pl.DataFrame(
        [
            ("brevo:5", "c1", 200, 50, 200, 250, "Silver", "silver "),
            ("brevo:6", "c1", 100, 0, 90, 90, "Bronze", "Silver"),
            ("esputnik:E1", "c2", 200, 100, None, None, "Bronze", None),
        ],
        schema={
            "order_id": pl.String,
            "customer_id": pl.String,
            "computed_points": pl.Int64,
            "computed_bonus": pl.Int64,
            "reported_points_earned": pl.Int64,
            "reported_points_awarded": pl.Int64,
            "computed_tier_after": pl.String,
            "reported_tier_after": pl.String,
        },
        orient="row",
    )


def _clv() -> tuple[pl.DataFrame, pl.DataFrame]:
    customers = pl.DataFrame(
        [
            ("c1", 5, 98.4, 99.4, 60.0, 2.5, 0.9, 58.0, 145.0),
            ("c2", 0, 0.0, 0.9, None, 0.8, 0.99, 70.0, 56.0),
        ],
        schema=[
            "customer_id", "frequency_x", "recency_t_x", "age_T", "monetary_value", "predicted_purchases",
            "p_alive", "expected_avg_spend", "clv",
        ],
        orient="row",
    )  # fmt: skip
    params = pl.DataFrame(
        [
            ("bgnbd", name, value, 7, -50.5, True, date(2024, 12, 31))
            for name, value in (("r", 0.24), ("alpha", 4.4), ("a", 0.79), ("b", 2.4))
        ]
        + [
            ("gamma_gamma", name, value, 4, -20.1, True, date(2024, 12, 31))
            for name, value in (("p", 6.25), ("q", 3.74), ("v", 15.44))
        ],
        schema=["model", "parameter", "value", "customers_used", "log_likelihood", "converged", "as_of"],
        orient="row",
    )
    return customers, params


def core_tables() -> dict[str, pl.DataFrame]:
    clv_customers, clv_params = _clv()
    return {
        "orders": _orders(),
        "customers": _customers(),
        "points_ledger": _ledger(),
        "tier_history": _tier_history(),
        "customer_points": _customer_points(),
        "points_reconciliation": _points_reconciliation(),
        "clv_customers": clv_customers,
        "clv_model_params": clv_params,
    }


@pytest.fixture(scope="module")
def marts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], float]:
    """The hand-made warehouse after `dbt build` as of 2024-12-31: its path, dbt's results and the build time."""
    tmp_path = tmp_path_factory.mktemp("marts")
    warehouse = tmp_path / "loyalty.duckdb"
    create_core(warehouse, core_tables())
    started = time.monotonic()
    results = run_dbt_build(tmp_path, warehouse, {"as_of": AS_OF})
    return warehouse, results, time.monotonic() - started


def test_build_runs_every_mart_with_its_tests(marts: tuple[Path, list[dict], float]) -> None:
    warehouse, results, seconds = marts
    ids = {r["unique_id"] for r in results}
    assert {f"model.loyalty.{name}" for name in MART_MODELS} <= ids
    unit_tests = {i.split(".")[-1] for i in ids if i.startswith("unit_test.")}
    assert {"rfm_scores_ties_and_segments", "tier_migration_counts_moves", "points_redemption_maths"} <= unit_tests
    tables = query(
        warehouse, "select table_name, table_type from information_schema.tables where table_schema = 'marts'"
    )
    assert dict(tables) == {name: "BASE TABLE" for name in MART_MODELS}
    assert seconds < 120  # ~40 s on a quiet machine; the bound only catches a runaway model


def test_customer_rfm_scores_by_hand(marts: tuple[Path, list[dict], float]) -> None:
    warehouse, _, _ = marts
    rows = query(
        warehouse,
        "select customer_id, as_of, recency_days, frequency, monetary, r_score, f_score, m_score, rfm_cell, segment"
        " from marts.customer_rfm order by customer_id",
    )
    as_of = date(2024, 12, 31)
    assert rows == [
        ("c1", as_of, 11, 6, Decimal("350.00"), 3, 5, 5, "355", "Loyal Customers"),
        ("c2", as_of, 6, 1, Decimal("200.00"), 5, 1, 3, "513", "New Customers"),
        ("c3", as_of, 11, 2, Decimal("200.00"), 3, 2, 3, "323", "About to Sleep"),
        ("c4", as_of, 351, 1, Decimal("30.00"), 1, 1, 1, "111", "Hibernating"),
        ("c5", as_of, 640, 3, Decimal("30.00"), 1, 3, 1, "131", "At Risk"),
        ("c6", as_of, 121, 4, Decimal("100.00"), 2, 4, 2, "242", "At Risk"),
    ]


def test_rfm_segment_summary_lists_every_segment(marts: tuple[Path, list[dict], float]) -> None:
    warehouse, _, _ = marts
    rows = query(
        warehouse,
        "select segment, customers, share, avg_recency_days, avg_frequency, avg_monetary, revenue"
        " from marts.rfm_segment_summary order by segment",
    )
    by_segment = {row[0]: row[1:] for row in rows}
    assert len(by_segment) == 10
    assert by_segment["At Risk"] == (2, pytest.approx(2 / 6), 380.5, 3.5, Decimal("65.00"), Decimal("130.00"))
    assert by_segment["Champions"] == (0, 0.0, None, None, None, Decimal("0.00"))
    assert sum(row[1] for row in rows) == 6


def test_rfm_history_rescores_each_month_end(marts: tuple[Path, list[dict], float]) -> None:
    warehouse, _, _ = marts
    months = query(warehouse, "select min(month_end), max(month_end), count(distinct month_end) from marts.rfm_history")
    # the spine starts with the first delivered order (c4, placed 2023-01-01) and ends with the as-of month
    assert months == [(date(2023, 1, 31), date(2024, 12, 31), 24)]
    latest = query(
        warehouse,
        "select customer_id, recency_days, frequency, monetary, r_score, f_score, m_score, segment"
        " from marts.rfm_history where month_end = date '2024-12-31' order by customer_id",
    )
    current = query(
        warehouse,
        "select customer_id, recency_days, frequency, monetary, r_score, f_score, m_score, segment"
        " from marts.customer_rfm order by customer_id",
    )
    assert latest == current
    # As of 2024-11-30 (window from 2022-12-02) five customers are scored: c2 has not ordered yet, c4's order of
    # 2023-01-01 is still in the window. R: c1 25 days (4 worse) 5, c3 60 days 4, c6 90 days 3, c4 2, c5 1.
    # M: c4 1029.00 5, c1 250.00 4, c6 3, c3 2, c5 1. The month before, c1 and c3 were in other segments.
    november = query(
        warehouse,
        "select customer_id, recency_days, frequency, rfm_cell, segment, previous_segment, is_segment_change"
        " from marts.rfm_history where month_end = date '2024-11-30' order by customer_id",
    )
    assert november == [
        ("c1", 25, 5, "544", "Champions", "Loyal Customers", True),
        ("c3", 60, 1, "412", "Promising", "New Customers", True),
        ("c4", 320, 2, "225", "Hibernating", "Hibernating", False),
        ("c5", 609, 3, "131", "At Risk", "At Risk", False),
        ("c6", 90, 4, "343", "Loyal Customers", "Loyal Customers", False),
    ]
    # c4's order placed 2023-01-01 23:59 leaves the window after 2024-12-30: still in it on 2024-11-30
    c4 = query(
        warehouse,
        "select frequency, monetary from marts.rfm_history where customer_id = 'c4' and month_end = date '2024-11-30'",
    )
    assert c4 == [(2, Decimal("1029.00"))]


def _rebuild_after_a_change(
    tmp_path: Path,
    model: str,
    mark: str,
    change: str,
    schema: str = "intermediate",
    *,
    setup: str | None = None,
    as_of: str = AS_OF,
) -> tuple[Path, str]:
    """Build `model` (and its parents) as of AS_OF, mark every row of it with `mark` (a SET clause), apply
    `change` to core, and build again as of `as_of`: the rows computed again lose the mark. Also builds `model`
    from scratch on the changed core, into `full.duckdb`. `setup`: SQL run on core before the first build.
    Returns (the warehouse, the model's table)."""
    warehouse = tmp_path / "loyalty.duckdb"
    create_core(warehouse, core_tables())
    if setup:
        with duckdb.connect(str(warehouse)) as con:
            con.execute(setup)
    run_dbt_build(tmp_path, warehouse, {"as_of": AS_OF}, f"+{model}")
    table = f"{schema}.{model}"
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"update {table} set {mark}")
        con.execute(change)
        con.execute(f"attach '{tmp_path / 'full.duckdb'}' as full_build")
        con.execute("create schema full_build.core")
        for name in CORE_COLUMNS:
            con.execute(f"create table full_build.core.{name} as select * from core.{name}")
    run_dbt_build(tmp_path, warehouse, {"as_of": as_of}, f"+{model}")
    (tmp_path / "full").mkdir()
    run_dbt_build(tmp_path / "full", tmp_path / "full.duckdb", {"as_of": as_of}, f"+{model}")
    return warehouse, table


def _assert_equals_the_full_build(warehouse: Path, table: str) -> None:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        con.execute(f"attach '{warehouse.parent / 'full.duckdb'}' as full_build (read_only)")
        assert con.sql(f"select count(*) from full_build.{table}").fetchone()[0] > 20
        for a, b in (("loyalty", "full_build"), ("full_build", "loyalty")):
            differ = f"select * from {a}.{table} except all select * from {b}.{table}"
            assert con.sql(f"select count(*) from ({differ})").fetchone() == (0,)


def _assert_a_table_without_fingerprints_is_built_again(tmp_path: Path, model: str, column: str, mark: str) -> None:
    """A table built by an older version, without the fingerprint column, is emptied and built again whole."""
    warehouse, table = tmp_path / "loyalty.duckdb", f"intermediate.{model}"
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"alter table {table} drop column {column}")
        con.execute(f"update {table} set {mark}")
    run_dbt_build(tmp_path, warehouse, {"as_of": AS_OF}, f"+{model}")
    _assert_equals_the_full_build(warehouse, table)


def test_rfm_scores_are_rebuilt_only_for_the_dates_whose_window_changed(tmp_path: Path) -> None:
    """int_customers_scored is incremental: a second build re-scores only the scoring dates whose window holds a
    changed order, other dates keep their rows untouched, and the table is what a full build makes."""
    mark = "customers_scored = customers_scored + 1000"
    # c6's order of 2024-08-01 is returned: it leaves the windows of 2024-08-31 and later
    change = "update core.orders set status = 'cancelled' where order_id = 'bonifiq:B62'"
    warehouse, table = _rebuild_after_a_change(tmp_path, "int_customers_scored", mark, change)
    rescored = query(warehouse, f"select distinct scored_as_of from {table} where customers_scored < 1000 order by 1")
    assert rescored == [(date(2024, m, monthrange(2024, m)[1]),) for m in range(8, 13)]
    c6 = query(warehouse, f"select frequency from {table} where customer_id = 'c6' and scored_as_of = '{AS_OF}'")
    assert c6 == [(3,)]
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"update {table} set customers_scored = customers_scored - 1000 where customers_scored > 1000")
    _assert_equals_the_full_build(warehouse, table)
    _assert_a_table_without_fingerprints_is_built_again(tmp_path, "int_customers_scored", "scoring_fingerprint", mark)


# identity relabels c6 (a smaller identifier arrived): the same orders, a new customer_id
RELABEL_C6 = (
    "update core.orders set customer_id = 'c0' where customer_id = 'c6';"
    "update core.customers set customer_id = 'c0' where customer_id = 'c6'"
)


@pytest.mark.parametrize(
    ("model", "schema", "column", "offset"),
    [("int_customers_scored", "intermediate", "customers_scored", 1000), ("rfm_history", "marts", "monetary", 100000)],
)
def test_a_customer_relabelled_by_identity_is_renamed_not_recomputed(
    tmp_path: Path, model: str, schema: str, column: str, offset: int
) -> None:
    """A new customer_id for the same orders (identity relabels a customer when a smaller identifier arrives)
    computes no row again (no scoring date, no rfm_history month): the rows kept take the new id, and the table
    is what a full build makes."""
    mark = f"{column} = {column} + {offset}"
    warehouse, table = _rebuild_after_a_change(tmp_path, model, mark, RELABEL_C6, schema=schema)
    assert query(warehouse, f"select count(*) from {table} where {column} < {offset}") == [(0,)]
    ids = query(warehouse, f"select customer_id, count(*) from {table} where customer_id in ('c0', 'c6') group by 1")
    assert ids == [("c0", 6)]
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"update {table} set {column} = {column} - {offset}")
    _assert_equals_the_full_build(warehouse, table)


def _month_ends(*months: tuple[int, int]) -> list[tuple[date]]:
    return [(date(y, m, monthrange(y, m)[1]),) for y, m in months]


def test_rfm_history_is_rebuilt_only_for_the_months_whose_scores_changed(tmp_path: Path) -> None:
    """rfm_history is incremental by month: a second build computes again the months whose scores, or whose
    previous month's scores, changed; the other months keep their rows untouched; the table is what a full build
    makes. Without the record of what was built, the table is built whole."""
    mark = "monetary = monetary + 100000"
    # c6's order of 2024-08-01 is returned: the scores of 2024-08-31 to 2024-12-31 change (see above), and so
    # do those months' rows; July keeps its scores, and its rows (August's previous segment comes from July).
    change = "update core.orders set status = 'cancelled' where order_id = 'bonifiq:B62'"
    warehouse, table = _rebuild_after_a_change(tmp_path, "rfm_history", mark, change, schema="marts")
    rebuilt = query(warehouse, f"select distinct month_end from {table} where monetary < 100000 order by 1")
    assert rebuilt == _month_ends(*((2024, m) for m in range(8, 13)))
    kept = query(warehouse, f"select count(distinct month_end) from {table} where monetary >= 100000")
    assert kept == [(24 - 5,)]
    c6 = query(warehouse, f"select frequency from {table} where customer_id = 'c6' and month_end = '{AS_OF}'")
    assert c6 == [(3,)]
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"update {table} set monetary = monetary - 100000 where monetary >= 100000")
    _assert_equals_the_full_build(warehouse, table)

    # no change at all: every month is kept
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"update {table} set {mark}")
    run_dbt_build(tmp_path, warehouse, {"as_of": AS_OF}, "+rfm_history")
    assert query(warehouse, f"select count(*) from {table} where monetary < 100000") == [(0,)]
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"update {table} set monetary = monetary - 100000")

    # the record of the months built is gone (a warehouse of an older version): built whole, as a full build
    with duckdb.connect(str(warehouse)) as con:
        con.execute("drop table intermediate.rfm_history__months")
        con.execute(f"update {table} set {mark}")
    run_dbt_build(tmp_path, warehouse, {"as_of": AS_OF}, "+rfm_history")
    assert query(warehouse, f"select count(*) from {table} where monetary >= 100000") == [(0,)]
    _assert_equals_the_full_build(warehouse, table)


def test_rfm_history_rebuilds_a_month_whose_previous_month_changed(tmp_path: Path) -> None:
    """A month's rows carry the previous month's segment: when only the previous month's scores change, the
    month is built again too."""
    mark = "monetary = monetary + 100000"
    # c4's order of 2023-01-01 23:59 is in the windows up to 2024-11-30, not in that of 2024-12-31: returning it
    # changes the scores of every month but December, whose rows still take November's segments
    change = "update core.orders set status = 'cancelled' where order_id = 'brevo:41'"
    warehouse, table = _rebuild_after_a_change(tmp_path, "rfm_history", mark, change, schema="marts")
    scores = query(
        warehouse, "select count(*) from intermediate.int_customers_scored where scored_as_of = date '2024-12-31'"
    )
    assert scores[0][0] > 0
    rebuilt = query(warehouse, f"select count(distinct month_end) from {table} where monetary < 100000")
    assert rebuilt == [(24,)]
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"update {table} set monetary = monetary - 100000 where monetary >= 100000")
    _assert_equals_the_full_build(warehouse, table)


def test_member_months_are_rebuilt_only_for_the_members_whose_inputs_changed(tmp_path: Path) -> None:
    """int_customer_months_tiered is incremental: a second build computes again only the members whose points
    entries, tier changes or tier changed; the others keep their rows untouched; the table is what a full build
    makes."""
    mark = "earned = earned + 100000"
    # c1's redemption of 2024-11-10 was 100 points, now 150 (the November flows and every later balance change)
    change = "update core.points_ledger set points = -150 where customer_id = 'c1' and entry_type = 'redeem'"
    warehouse, table = _rebuild_after_a_change(tmp_path, "int_customer_months_tiered", mark, change)
    recomputed = query(warehouse, f"select distinct customer_id from {table} where earned < 100000")
    assert recomputed == [("c1",)]
    kept = query(warehouse, f"select distinct customer_id from {table} where earned >= 100000 order by 1")
    assert kept == [("c2",), ("c4",)]
    c1 = query(warehouse, f"select redeemed, balance from {table} where customer_id = 'c1' and month = '2024-12-01'")
    assert c1 == [(0, 1060)]
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"update {table} set earned = earned - 100000 where earned >= 100000")
    _assert_equals_the_full_build(warehouse, table)
    _assert_a_table_without_fingerprints_is_built_again(
        tmp_path, "int_customer_months_tiered", "member_fingerprint", mark
    )


# What the Python steps record for fct_orders: one canonical run merged under fingerprint F, one full ledger
# computation (`runs._record_ledger_changes`).
FCT_BOOKKEEPING = (
    "create table core.canonical_runs (run_id varchar, fingerprint varchar);"
    "insert into core.canonical_runs values ('r1', 'F');"
    "create table core.ledger_changes (computation bigint, customer_id varchar);"
    "insert into core.ledger_changes values (1, null)"
)
FCT_MARK = "points_earned = points_earned + 100000"


def _fct_orders_after(tmp_path: Path, change: str, as_of: str = AS_OF) -> tuple[Path, list[str]]:
    """Build fct_orders as of AS_OF, mark every row, apply `change` (SQL on core, as the Python steps would write
    it) and build again as of `as_of`; then check the table against a full build as of `as_of` on the changed
    core. Returns the warehouse and the customers whose rows were computed again (the marked rows kept)."""
    warehouse, _ = _rebuild_after_a_change(
        tmp_path, "fct_orders", FCT_MARK, change, "marts", setup=FCT_BOOKKEEPING, as_of=as_of
    )
    computed = query(
        warehouse,
        "select distinct coalesce(customer_id, order_id) from marts.fct_orders where points_earned < 100000 order by 1",
    )
    with duckdb.connect(str(warehouse)) as con:
        con.execute("update marts.fct_orders set points_earned = points_earned - 100000 where points_earned >= 100000")
    _assert_equals_the_full_build(warehouse, "marts.fct_orders")
    return warehouse, [row[0] for row in computed]


def test_fct_orders_computes_again_the_customers_of_new_runs_and_of_the_ledger_changes(tmp_path: Path) -> None:
    """fct_orders is incremental by customer: a canonical run merged since the last build (its orders' events)
    and the customers the ledger computed again since (core.ledger_changes) make their customers' orders be
    computed again, and no other; identity joining two customers computes both; the table is what a full
    build makes."""
    change = (
        # run r2: c6's order of 2024-08-01 is returned (c6's first purchase stays; its points would go)
        "update core.orders set status = 'cancelled' where order_id = 'bonifiq:B62';"
        "insert into core.order_events (event_id, order_id, run_id) values ('e2', 'bonifiq:B62', 'r2');"
        # and a record of c7's cart carries c5's e-mail: identity joins c7 into c5 (c5's first purchase holds)
        "update core.orders set customer_id = 'c5' where customer_id = 'c7';"
        "insert into core.order_events (event_id, order_id, run_id) values ('e3', 'esputnik:E70', 'r2');"
        "insert into core.canonical_runs values ('r2', 'F');"
        # ledger computation 2: c1's redemption of 2024-11-10 was 100 points, now 150
        "update core.points_ledger set points = -150 where customer_id = 'c1' and entry_type = 'redeem';"
        "insert into core.ledger_changes values (2, 'c1')"
    )
    warehouse, computed = _fct_orders_after(tmp_path, change)
    assert computed == ["c1", "c5", "c6"]
    rows = query(
        warehouse,
        "select order_id, customer_id, is_first_purchase, points_redeemed from marts.fct_orders"
        " where order_id in ('bonifiq:B62', 'brevo:5', 'brevo:70', 'esputnik:E50') order by 1",
    )
    assert rows == [
        ("bonifiq:B62", "c6", False, 0),
        ("brevo:5", "c1", False, 150),
        ("brevo:70", "c5", False, 0),
        ("esputnik:E50", "c5", True, 0),
    ]


def test_fct_orders_computes_again_what_the_new_as_of_date_reaches(tmp_path: Path) -> None:
    """A later as-of date, nothing else new: the customers with an order placed (c7's first delivered order,
    placed 2025-01-01 00:00) or a points entry effective in between are computed again, and only they."""
    change = (
        "insert into core.points_ledger (entry_id, customer_id, order_id, entry_type, points, effective_at, rule)"
        " values ('p_new', 'c3', 'bonifiq:B2', 'earn', 120, timestamp '2025-01-01 20:00', 'earn')"
    )
    warehouse, computed = _fct_orders_after(tmp_path, change, as_of="2025-01-01")
    assert computed == ["c3", "c7"]
    assert query(warehouse, "select is_first_purchase from marts.fct_orders where order_id = 'brevo:71'") == [(True,)]


@pytest.mark.parametrize(
    "change",
    [
        "insert into core.ledger_changes values (2, null)",  # the ledger computed whole
        "update core.canonical_runs set fingerprint = 'G'",  # merged again under other rules (FX rates)
        "drop table intermediate.fct_orders__built",  # no record of the last build (an older warehouse)
    ],
    ids=["ledger-whole", "canonical-rules", "no-record"],
)
def test_fct_orders_is_built_whole_when_it_cannot_tell_what_changed(tmp_path: Path, change: str) -> None:
    _, computed = _fct_orders_after(tmp_path, change)
    assert len(computed) == len(_orders().unique("customer_id"))


def test_fct_orders_keeps_every_row_when_nothing_changed(tmp_path: Path) -> None:
    _, computed = _fct_orders_after(tmp_path, "select 1")
    assert computed == []


def test_fct_orders_writes_only_the_rows_that_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Of the orders computed again, only those whose row differs from the stored one are written again: the
    ledger computed c1 again, and only the order of c1's changed redemption has another row (a row written
    again gets a new DuckDB row id; without vacuum the others keep theirs)."""
    monkeypatch.setenv("LOYALTY_DUCKDB_VACUUM_TASKS", "0")
    warehouse = tmp_path / "loyalty.duckdb"
    create_core(warehouse, core_tables())
    with duckdb.connect(str(warehouse)) as con:
        con.execute(FCT_BOOKKEEPING)
    run_dbt_build(tmp_path, warehouse, {"as_of": AS_OF}, "+fct_orders")
    before = dict(query(warehouse, "select order_id, rowid from marts.fct_orders"))
    with duckdb.connect(str(warehouse)) as con:
        con.execute("update core.points_ledger set points = -150 where customer_id = 'c1' and entry_type = 'redeem'")
        con.execute("insert into core.ledger_changes values (2, 'c1')")
    run_dbt_build(tmp_path, warehouse, {"as_of": AS_OF}, "+fct_orders")
    after = dict(query(warehouse, "select order_id, rowid from marts.fct_orders"))
    assert sorted(after) == sorted(before)
    assert sorted(order for order, row in after.items() if row != before[order]) == ["brevo:5"]
    assert query(warehouse, "select points_redeemed from marts.fct_orders where order_id = 'brevo:5'") == [(150,)]


# Every order has a reconciliation row (the fixture's three, and a plain one for each other order).
RECONCILIATION_SETUP = (
    FCT_BOOKKEEPING + ";"
    "insert into core.points_reconciliation (order_id, customer_id, computed_points, computed_bonus)"
    " select order_id, customer_id, 10, 0 from core.orders"
    " where order_id not in (select order_id from core.points_reconciliation)"
)
RECONCILIATION_MARK = "computed_points = computed_points + 100000"


def test_points_reconciliation_computes_again_the_customers_of_new_runs_and_of_the_ledger_changes(
    tmp_path: Path,
) -> None:
    """points_reconciliation is incremental by customer, as fct_orders: the orders of a canonical run merged
    since the last build and of the customers the ledger computed again are computed again, and no other;
    the row of an order the ledger no longer reconciles goes; the table is what a full build makes."""
    change = (
        # run r2 (the ledger not run since): c6's order of 2024-08-01 is cancelled
        "update core.orders set status = 'cancelled' where order_id = 'bonifiq:B62';"
        "insert into core.order_events (event_id, order_id, run_id) values ('e2', 'bonifiq:B62', 'r2');"
        "insert into core.canonical_runs values ('r2', 'F');"
        # ledger computation 2: c1's order of 2024-11-05 earns 40 points, and brevo:6 is not reconciled any more;
        # identity joined c7 into c5, whose rows the ledger wrote again (c7's deleted)
        "update core.points_reconciliation set computed_points = 40 where order_id = 'brevo:5';"
        "delete from core.points_reconciliation where order_id = 'brevo:6';"
        "update core.orders set customer_id = 'c5' where customer_id = 'c7';"
        "update core.points_reconciliation set customer_id = 'c5' where customer_id = 'c7';"
        "insert into core.ledger_changes values (2, 'c1'), (2, 'c5'), (2, 'c7')"
    )
    warehouse, table = _rebuild_after_a_change(
        tmp_path, "points_reconciliation", RECONCILIATION_MARK, change, "marts", setup=RECONCILIATION_SETUP
    )
    computed = query(warehouse, f"select distinct customer_id from {table} where computed_points < 100000 order by 1")
    assert [row[0] for row in computed] == ["c1", "c5", "c6"]
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"update {table} set computed_points = computed_points - 100000 where computed_points >= 100000")
    _assert_equals_the_full_build(warehouse, table)
    rows = query(
        warehouse,
        f"select order_id, customer_id, status, computed_points from {table}"
        " where order_id in ('bonifiq:B62', 'brevo:5', 'brevo:6', 'brevo:70') order by 1",
    )
    assert rows == [
        ("bonifiq:B62", "c6", "cancelled", 10),
        ("brevo:5", "c1", "delivered", 40),
        ("brevo:70", "c5", "pending", 10),
    ]


def test_points_reconciliation_keeps_every_row_when_nothing_changed(tmp_path: Path) -> None:
    warehouse, table = _rebuild_after_a_change(
        tmp_path, "points_reconciliation", RECONCILIATION_MARK, "select 1", "marts", setup=RECONCILIATION_SETUP
    )
    assert query(warehouse, f"select count(*) from {table} where computed_points < 100000") == [(0,)]


def test_int_orders_delivered_computes_again_the_customers_of_new_runs_and_of_the_new_as_of_date(
    tmp_path: Path,
) -> None:
    """int_orders_delivered is incremental by customer, reading neither the ledger nor its changes: a canonical
    run merged since the last build (c6's order cancelled: its row goes) and an order placed between the two
    as-of dates (c7's first delivered order) make their customers' orders be computed again, and no other
    (not c1, whom the ledger computed again); the table is what a full build makes."""
    change = (
        "update core.orders set status = 'cancelled' where order_id = 'bonifiq:B62';"
        "insert into core.order_events (event_id, order_id, run_id) values ('e2', 'bonifiq:B62', 'r2');"
        "insert into core.canonical_runs values ('r2', 'F');"
        "insert into core.ledger_changes values (2, 'c1')"
    )
    mark = "net_amount_reporting = net_amount_reporting + 100000"
    # c2 gets copies of c1's six orders: more rows than a full build's check wants
    setup = (
        FCT_BOOKKEEPING + ";insert into core.orders select * replace (order_id || '-copy' as order_id, 'c2' as "
        "customer_id) from core.orders where customer_id = 'c1'"
    )
    warehouse, table = _rebuild_after_a_change(
        tmp_path, "int_orders_delivered", mark, change, setup=setup, as_of="2025-01-01"
    )
    computed = query(
        warehouse, f"select distinct customer_id from {table} where net_amount_reporting < 100000 order by 1"
    )
    assert [row[0] for row in computed] == ["c6", "c7"]
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"update {table} set {mark.replace('+', '-')} where net_amount_reporting >= 100000")
    _assert_equals_the_full_build(warehouse, table)
    orders = query(warehouse, f"select order_id from {table} where customer_id in ('c6', 'c7') order by 1")
    assert orders == [("bonifiq:B60",), ("bonifiq:B61",), ("bonifiq:B63",), ("brevo:71",)]


def test_tier_migration_from_tier_history(marts: tuple[Path, list[dict], float]) -> None:
    warehouse, _, _ = marts
    rows = query(
        warehouse,
        "select month, tier_from, tier_to, movement, customers, new_members, upgrades, downgrades, retained"
        " from marts.tier_migration where month in (date '2023-11-01', date '2024-01-01', date '2024-12-01')"
        " order by month, tier_from, tier_to",
    )
    assert rows == [
        (date(2023, 11, 1), "Bronze", "Silver", "upgrade", 1, 1, 1, 0, 0),
        (date(2024, 1, 1), "Bronze", "Bronze", "retained", 1, 1, 0, 0, 1),
        (date(2024, 1, 1), "Silver", "Silver", "retained", 1, 0, 0, 0, 1),
        (date(2024, 12, 1), "Bronze", "Bronze", "retained", 2, 1, 0, 0, 2),
        (date(2024, 12, 1), "Silver", "Bronze", "downgrade", 1, 0, 0, 1, 0),
    ]


def test_points_redemption_rates_and_liability(marts: tuple[Path, list[dict], float]) -> None:
    warehouse, _, _ = marts
    rows = query(
        warehouse,
        "select month, tier, members, earned, bonus, redeemed, expired, redemption_rate, breakage,"
        " outstanding_points, liability, reporting_currency"
        " from marts.points_redemption where month in (date '2024-11-01', date '2024-12-01') order by month, tier",
    )
    assert rows == [
        # c4 alone, nothing earned this month: the rates are unknown, not zero or infinite
        (date(2024, 11, 1), "Bronze", 1, 0, 0, 0, 0, None, None, 130, Decimal("6.50"), "USD"),
        # c1: 1000 + 200 + 50 - 100 - 40 = 1110 points outstanding, worth 1110 / 20 = 55.50
        (date(2024, 11, 1), "Silver", 1, 200, 50, 100, 40, 0.5, 0.2, 1110, Decimal("55.50"), "USD"),
        # c1 downgraded on the 1st, c2 joins, c4: 1110 + 300 + 130
        (date(2024, 12, 1), "Bronze", 3, 200, 100, 0, 0, 0.0, 0.0, 1540, Decimal("77.00"), "USD"),
    ]


def test_customer_lifetime_value_joins_orders_and_predictions(marts: tuple[Path, list[dict], float]) -> None:
    warehouse, _, _ = marts
    rows = query(
        warehouse,
        "select customer_id, orders, revenue, aov, first_order_at, tenure_days, predicted_purchases, p_alive, clv"
        " from marts.customer_lifetime_value where customer_id in ('c1', 'c4', 'c7') order by customer_id",
    )
    assert rows == [
        ("c1", 6, Decimal("350.00"), Decimal("58.33"), datetime(2023, 2, 1, 9), 699, 2.5, 0.9, 145.0),
        # all delivered orders count here, the one before the RFM window too; the returned one does not
        ("c4", 2, Decimal("1029.00"), Decimal("514.50"), datetime(2023, 1, 1, 23, 59), 730, None, None, None),
    ]
    params = query(warehouse, "select model, count(*) from marts.clv_model_params group by model order by model")
    assert params == [("bgnbd", 4), ("gamma_gamma", 3)]


def test_order_value_trend_by_day_and_source(marts: tuple[Path, list[dict], float]) -> None:
    warehouse, _, _ = marts
    rows = query(
        warehouse,
        "select order_date, order_month, source, orders, delivered, cancelled, pending, abandoned_carts, revenue, aov"
        " from marts.order_value_trend where order_month = date '2024-12-01' order by order_date, source",
    )
    assert rows == [
        (date(2024, 12, 10), date(2024, 12, 1), "brevo", 1, 0, 0, 1, 0, Decimal("0.00"), None),
        (date(2024, 12, 11), date(2024, 12, 1), "esputnik", 0, 0, 0, 0, 1, Decimal("0.00"), None),
        (date(2024, 12, 20), date(2024, 12, 1), "bonifiq", 1, 1, 0, 0, 0, Decimal("120.00"), Decimal("120.00")),
        (date(2024, 12, 20), date(2024, 12, 1), "brevo", 1, 1, 0, 0, 0, Decimal("100.00"), Decimal("100.00")),
        (date(2024, 12, 25), date(2024, 12, 1), "esputnik", 1, 1, 0, 0, 0, Decimal("200.00"), Decimal("200.00")),
        (date(2024, 12, 30), date(2024, 12, 1), "brevo", 1, 0, 1, 0, 0, Decimal("0.00"), None),
    ]
    july = query(
        warehouse,
        "select orders, delivered, revenue, aov from marts.order_value_trend where order_date = date '2024-07-01'",
    )
    assert july == [(2, 2, Decimal("50.00"), Decimal("25.00"))]


def test_campaign_performance(marts: tuple[Path, list[dict], float]) -> None:
    warehouse, _, _ = marts
    rows = query(
        warehouse,
        "select campaign, referrer, orders, delivered_orders, customers, new_customers, revenue, points_awarded"
        " from marts.campaign_performance order by campaign, referrer",
    )
    by_key = {(row[0], row[1]): row[2:] for row in rows}
    # c2's first purchase (new) and c4's second order (c4 first bought on 2023-01-01): one new customer
    assert by_key[("xmas", "instagram")] == (2, 2, 2, 1, Decimal("230.00"), 430)
    assert by_key[("launch", "google")] == (1, 1, 1, 1, Decimal("50.00"), 0)
    # pending and cancelled orders count as orders, the abandoned cart and the order after the as-of date do not
    assert sum(row[2] for row in rows) == 20


def test_points_reconciliation_differences(marts: tuple[Path, list[dict], float]) -> None:
    warehouse, _, _ = marts
    rows = query(
        warehouse,
        "select order_id, points_earned_difference, points_awarded_difference, tier_after_matches,"
        " has_reported_figures, has_discrepancy from marts.points_reconciliation order by order_id",
    )
    assert rows == [
        ("brevo:5", 0, 0, True, True, False),
        ("brevo:6", 10, 10, False, True, True),
        ("esputnik:E1", None, None, None, False, False),
    ]


def test_fct_orders_and_dim_customers(marts: tuple[Path, list[dict], float]) -> None:
    warehouse, _, _ = marts
    assert query(warehouse, "select count(*) from marts.fct_orders") == [(len(_orders()),)]
    order = query(
        warehouse,
        "select is_first_purchase, is_return, points_earned, points_bonus, points_redeemed, points_expired"
        " from marts.fct_orders where order_id in ('brevo:42', 'brevo:5', 'esputnik:E1') order by order_id",
    )
    assert order == [(False, True, 0, 0, 0, 0), (False, False, 200, 50, 100, 0), (True, False, 200, 100, 0, 0)]
    customers = query(
        warehouse,
        "select customer_id, reachable_by_mail, reachable_by_sms, orders, delivered_orders, rfm_segment, tier,"
        " points_balance from marts.dim_customers where customer_id in ('c1', 'c7') order by customer_id",
    )
    assert customers == [
        ("c1", True, True, 6, 6, "Loyal Customers", "Bronze", 1110),
        ("c7", True, True, 1, 0, None, None, None),
    ]


def test_marts_carry_no_pii(marts: tuple[Path, list[dict], float]) -> None:
    warehouse, _, _ = marts
    columns = query(
        warehouse,
        "select table_name, column_name from information_schema.columns where table_schema = 'marts'",
    )
    assert [(t, c) for t, c in columns if PII_COLUMN.search(c)] == []
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for table in sorted({t for t, _ in columns}):
            frame = con.execute(f"select * from marts.{table}").pl()
            for column, dtype in frame.schema.items():
                if dtype == pl.List(pl.String):
                    values = frame[column].explode().drop_nulls().to_list()
                elif dtype == pl.String:  # dates and numbers would look like phone numbers
                    values = frame[column].drop_nulls().to_list()
                else:
                    continue
                leaks = [v for v in values if EMAIL.search(v) or PHONE.search(v)]
                assert leaks == [], f"marts.{table}.{column} holds contact data: {leaks[:3]}"


def test_build_on_an_empty_warehouse(tmp_path: Path) -> None:
    """Core tables that exist with no rows (a fresh warehouse) build every mart, empty, and pass every test."""
    warehouse = tmp_path / "loyalty.duckdb"
    create_core(warehouse, {})
    assert set(CORE_COLUMNS) >= {"orders", "points_ledger", "clv_customers"}
    run_dbt_build(tmp_path, warehouse, {"as_of": AS_OF})
    counts = {name: query(warehouse, f"select count(*) from marts.{name}")[0][0] for name in sorted(MART_MODELS)}
    # the segment summary lists every segment, with no customers; everything else is empty
    assert counts == {name: (10 if name == "rfm_segment_summary" else 0) for name in MART_MODELS}
    assert query(warehouse, "select sum(customers), count(share) from marts.rfm_segment_summary") == [(0, 0)]
