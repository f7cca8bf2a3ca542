"""Incremental canonical rebuild (issue #6): a run merges only the orders its new events touch, and the
canonical tables come out exactly as a rebuild from scratch over the same files would make them.

History: the generated files up to a cut-off date, run once. Next day: the rest of the files (new orders and
status updates of old ones) plus one record that joins two customers seen in the history, run again. The
reference: one run over every file into a new warehouse.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pipelines import runs
from pipelines.generate import generate
from pipelines.settings import Settings
from tests.helpers import default_rules, query

AS_OF = "2025-06-30"
CANONICAL = {
    "orders": "select * from core.orders order by order_id",
    "order_items": "select * from core.order_items order by order_id, line_number",
    "customers": "select * from core.customers order by customer_id",
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("incremental") / "all"
    generate(root, orders=1500, seed=11, end_date=date(2025, 6, 30))
    return root


def settings_for(raw: Path, root: Path) -> Settings:
    return Settings.resolve(raw_dir=str(raw), warehouse=str(root / "loyalty.duckdb"), as_of=AS_OF)


def run(settings: Settings, run_id: str, rules=None) -> runs.CanonicalReport:
    rules = rules or default_rules()
    runs.ingest(settings, rules, run_id=run_id)
    return runs.rebuild_canonical(settings, rules)


def snapshot(settings: Settings) -> dict[str, list[tuple]]:
    return {name: query(settings.warehouse, sql) for name, sql in CANONICAL.items()}


def linking_record(settings: Settings) -> str:
    """An eSputnik order carrying the e-mail of one customer and the eSputnik id of another."""
    rows = query(
        settings.warehouse,
        """
        select customer_id, email, list_filter(source_customer_ids, x -> x like 'esputnik:%')[1]
        from core.customers order by customer_id
        """,
    )
    with_email = next(r for r in rows if r[1])
    with_id = next(r for r in rows if r[2] and r[0] != with_email[0] and r[1] != with_email[1])
    record = {
        "externalOrderId": "LINK-1",
        "externalCustomerId": with_id[2].removeprefix("esputnik:"),
        "totalCost": 120,
        "status": "DELIVERED",
        "date": "2025-06-20T10:00:00Z",
        "email": with_email[1],
        "currency": "EUR",
        "items": [
            {
                "externalItemId": "SKU-1",
                "name": "Bolsa",
                "quantity": 1,
                "cost": 120,
                "url": "http://example.com/1",
                "imageUrl": "http://example.com/1.png",
            }
        ],
    }
    return json.dumps(record)


def renaming_record(settings: Settings, not_of: list[str]) -> str:
    """An eSputnik order of a customer with an eSputnik id (none of `not_of`'s e-mails) bringing a new e-mail that
    sorts before any other identifier of the customer: the customer's id (a hash of the smallest) changes."""
    rows = query(
        settings.warehouse,
        """
        select customer_id, email, list_filter(source_customer_ids, x -> x like 'esputnik:%')[1]
        from core.customers where len(list_filter(source_customer_ids, x -> x like 'esputnik:%')) > 0
        order by customer_id
        """,
    )
    customer = next(r for r in rows if r[1] not in not_of)
    record = json.loads(linking_record(settings))
    record.update(externalOrderId="RENAME-1", externalCustomerId=customer[2].removeprefix("esputnik:"))
    record["email"] = "0000-first@example.com"
    return json.dumps(record)


@pytest.mark.parametrize("bucket_events", [None, "400"], ids=["one-bucket", "buckets"])
def test_a_run_on_new_files_merges_only_the_touched_orders_and_matches_a_full_rebuild(
    generated, tmp_path, monkeypatch, bucket_events
) -> None:
    """Also with the touched orders' events in several buckets: read once into a temporary table
    (`warehouse.bucketed`), then bucket by bucket."""
    if bucket_events:
        monkeypatch.setenv("LOYALTY_MERGE_BUCKET_EVENTS", bucket_events)
    files = sorted(p for p in generated.rglob("*") if p.is_file())
    cut = "2025-04-01"
    history = tmp_path / "raw"
    for path in files:
        if path.name[:10] < cut:
            target = history / path.relative_to(generated)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    daily = settings_for(history, tmp_path / "daily")
    first = run(daily, "day-1")
    assert first.mode == "full" and first.orders_merged == first.orders > 0

    # the next day's files, and a record that joins two customers of the history
    link = linking_record(daily)
    rename = renaming_record(daily, not_of=[json.loads(link)["email"]])
    renamed_before = query(
        daily.warehouse,
        "select customer_id from core.customers where list_contains(source_customer_ids, ?)",
        [f"esputnik:{json.loads(rename)['externalCustomerId']}"],
    )
    for path in files:
        target = history / path.relative_to(generated)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    (history / "esputnik" / "2025-06-20-link.ndjson").write_text(link + "\n" + rename + "\n")
    second = run(daily, "day-2")
    assert second.mode == "incremental"
    assert 0 < second.orders_merged < second.orders
    linked = query(
        daily.warehouse,
        "select count(distinct customer_id) from core.orders where order_id = 'esputnik:LINK-1' or customer_id in "
        "(select customer_id from core.customers where list_contains(source_customer_ids, ?) or email = ?)",
        [f"esputnik:{json.loads(link)['externalCustomerId']}", json.loads(link)["email"]],
    )
    assert linked == [(1,)]  # the record joined two customers of the history into one
    renamed_after = query(
        daily.warehouse, "select distinct customer_id from core.orders where order_id = 'esputnik:RENAME-1'"
    )
    assert len(renamed_before) == len(renamed_after) == 1 and renamed_after != renamed_before
    old_id = list(renamed_before[0])
    orders_left = query(daily.warehouse, "select count(*) from core.orders where customer_id = ?", old_id)
    assert orders_left == [(0,)]

    reference = settings_for(history, tmp_path / "reference")
    full = run(reference, "once")
    assert full.mode == "full"
    got, expected = snapshot(daily), snapshot(reference)
    for name in CANONICAL:
        assert len(got[name]) == len(expected[name]) > 0, name
        assert got[name] == expected[name], name

    # nothing new: nothing merged, nothing changed
    third = run(daily, "day-3")
    assert third.mode == "unchanged" and third.orders_merged == 0
    assert snapshot(daily) == got


def test_new_fx_rates_merge_every_order_again(generated, tmp_path) -> None:
    settings = settings_for(generated, tmp_path / "w")
    rules = default_rules()
    eur_total = "select count(*), sum(net_amount_reporting) from core.orders where currency = 'EUR'"
    assert run(settings, "r1", rules).mode == "full"
    count, before = query(settings.warehouse, eur_total)[0]
    changed = rules.model_copy(update={"fx_rates": {**rules.fx_rates, "EUR": rules.fx_rates["EUR"] * 2}})
    report = run(settings, "r2", changed)
    assert report.mode == "full" and report.orders_merged == report.orders
    _, after = query(settings.warehouse, eur_total)[0]
    assert count > 0 and abs(after - 2 * before) <= count * Decimal("0.01")


@pytest.mark.parametrize("buckets", [1, 7])
def test_identity_in_the_warehouse_equals_identity_over_the_events(generated, tmp_path, buckets) -> None:
    """runs.py resolves customers with DuckDB reducing the events first (in buckets of orders when there are
    many events); the pure functions are the reference."""
    from pipelines import warehouse
    from pipelines.identity import build_customers, resolve, resolve_in_warehouse

    raw = tmp_path / "raw"
    shutil.copytree(generated, raw)
    # one order sent twice with another phone and first name: the later file's values win
    for day, phone, first in (("21", "+55 11 91111-1111", "Ana"), ("22", "+55 11 92222-2222", "Bia")):
        record = {
            "externalOrderId": "CHG-1",
            "externalCustomerId": "C-CHG",
            "totalCost": 50,
            "status": "DELIVERED",
            "date": f"2025-06-{day}T10:00:00Z",
            "phone": phone,
            "firstName": first,
            "currency": "EUR",
            "items": [
                {
                    "externalItemId": "S",
                    "name": "N",
                    "quantity": 1,
                    "cost": 50,
                    "url": "http://example.com/s",
                    "imageUrl": "http://example.com/s.png",
                }
            ],
        }
        (raw / "esputnik" / f"2025-06-{day}-chg.ndjson").write_text(json.dumps(record) + "\n")
    settings = settings_for(raw, tmp_path / "w")
    runs.ingest(settings, default_rules(), run_id="r1")
    with warehouse.connect(settings.warehouse) as con:
        order_customer, customers = resolve_in_warehouse(con, buckets=buckets)
        events = warehouse.read_table(con, "order_events")
    expected_orders, _ = resolve(events)
    expected_customers = build_customers(events, expected_orders)
    assert order_customer.sort("order_id").equals(expected_orders.sort("order_id"))
    assert customers.height == expected_customers.height > 100
    assert customers.equals(expected_customers)
    assert customers["source_customer_ids"].list.len().sum() > 0 and customers["document_hash"].null_count() > 0
    changed = customers.filter(pl.col("source_customer_ids").list.contains("esputnik:C-CHG"))
    assert changed["first_name"].to_list() == ["Bia"]


LEDGER = {
    "points_ledger": "points_ledger",
    "customer_points": "customer_points",
    "tier_history": "tier_history",
    "points_reconciliation": "reconciliation",
    "unpriced_redemptions": "unpriced_redemptions",
}


def ledger_rows(settings: Settings) -> dict[str, list[tuple]]:
    return {table: sorted(query(settings.warehouse, f"select * from core.{table}"), key=repr) for table in LEDGER}


def reference_ledger(settings: Settings, rules) -> dict[str, list[tuple]]:
    """The pure ledger over every order, as of the settings' date."""
    from pipelines import warehouse
    from pipelines.ledger import compute_ledger

    with warehouse.connect(settings.warehouse, read_only=True) as con:
        orders = con.sql("select * from core.orders").pl()
        items = con.sql("select * from core.order_items").pl()
    result = compute_ledger(orders, items, rules, settings.as_of)
    return {table: sorted(getattr(result, name).rows(), key=repr) for table, name in LEDGER.items()}


def assert_ledger_is_pure(settings: Settings, rules) -> None:
    """The ledger tables in the warehouse are, row for row, the pure ledger over every order."""
    got, expected = ledger_rows(settings), reference_ledger(settings, rules)
    for table in LEDGER:
        assert got[table] == expected[table], table


@pytest.mark.parametrize("files", [False, True], ids=["part", "files"])
def test_the_ledger_computes_only_customers_whose_results_can_change_and_matches_a_full_computation(
    generated, tmp_path, monkeypatch, files
):
    """As-of dates moving day by day, across month starts (tier evaluations), expiries and exits from the
    qualifying window, then new files: each time the incremental ledger equals the pure ledger over everything.
    Buckets are read from the customers' orders and lines copied to temporary tables, or from files
    (`warehouse.bucketed`)."""
    from pipelines import warehouse

    monkeypatch.setenv("LOYALTY_LEDGER_BUCKET_ORDERS", "300")  # several buckets
    monkeypatch.setattr(warehouse, "BUCKET_FILES_MIN_ROWS", 0 if files else 10**9)
    rules = default_rules()
    raw = tmp_path / "raw"
    cut = "2025-03-01"
    for path in sorted(p for p in generated.rglob("*") if p.is_file()):
        if path.name[:10] < cut:
            target = raw / path.relative_to(generated)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)

    def at(as_of: str) -> Settings:
        return Settings.resolve(raw_dir=str(raw), warehouse=str(tmp_path / "w" / "loyalty.duckdb"), as_of=as_of)

    run(at("2025-01-27"), "history", rules)
    first = runs.compute_points(at("2025-01-27"), rules)
    assert first.mode == "full" and first.customers_computed == first.customers > 100

    modes, changed_without_new_orders = [], 0
    before = ledger_rows(at("2025-01-27"))
    for as_of in ("2025-01-28", "2025-01-31", "2025-02-01", "2025-02-02", "2025-02-20", "2025-02-25", "2025-03-05"):
        report = runs.compute_points(at(as_of), rules)
        modes.append(report.mode)
        got = ledger_rows(at(as_of))
        expected = reference_ledger(at(as_of), rules)
        for table in LEDGER:
            assert got[table] == expected[table], (as_of, table)
        if report.mode == "incremental":
            assert report.customers_computed < report.customers
        changed_without_new_orders += got != before
        before = got
    assert modes.count("incremental") >= 4
    assert changed_without_new_orders >= 4  # time alone moved results: the window rules were exercised
    downgrades = query(
        at("2025-03-05").warehouse,
        "select count(*) from core.tier_history where changed_at "
        "between '2025-01-28' and '2025-03-05 23:59:59' and reason = 'monthly_downgrade'",
    )
    expiries = query(
        at("2025-03-05").warehouse,
        "select count(*) from core.points_ledger where entry_type = "
        "'expire' and effective_at between '2025-01-28' and '2025-03-05 23:59:59'",
    )
    assert downgrades[0][0] > 0 and expiries[0][0] > 0

    # the next files: new orders, status updates of old ones
    for path in sorted(p for p in generated.rglob("*") if p.is_file()):
        target = raw / path.relative_to(generated)
        if path.name[:10] < "2025-03-08" and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    run(at("2025-03-07"), "next", rules)
    report = runs.compute_points(at("2025-03-07"), rules)
    assert report.mode == "incremental" and 0 < report.customers_computed < report.customers
    assert_ledger_is_pure(at("2025-03-07"), rules)

    # an earlier as-of date, or other rules: every customer again
    assert runs.compute_points(at("2025-03-06"), rules).mode == "full"
    richer = rules.model_copy(update={"first_purchase_bonus": rules.first_purchase_bonus + 1})
    again = runs.compute_points(at("2025-03-06"), richer)
    assert again.mode == "full" and again.customers_computed == again.customers
    assert ledger_rows(at("2025-03-06")) == reference_ledger(at("2025-03-06"), richer)


def test_the_ledger_computes_a_customer_again_for_a_column_it_reads_only(generated, tmp_path):
    """A change to an order column or line column the ledger does not read (shipping, a product id) computes
    nobody again; a change to one it reads (the net amount) computes that customer again, and the ledger then
    equals the pure ledger. As of the same date as the last computation no instant passes: the window rules
    select nobody, even on the data's last day, where orders are pending and lots expiring."""
    rules = default_rules()
    settings = Settings.resolve(raw_dir=str(generated), warehouse=str(tmp_path / "w" / "loyalty.duckdb"), as_of=AS_OF)
    run(settings, "all", rules)
    assert runs.compute_points(settings, rules).mode == "full"
    assert runs.compute_points(settings, rules).customers_computed == 0
    [([a, b],)] = query(
        settings.warehouse,
        "select list(distinct customer_id order by customer_id)[1:2] from core.orders o "
        "where status = 'delivered' and exists (select 1 from core.order_items i where i.order_id = o.order_id)",
    )
    with duckdb.connect(str(settings.warehouse)) as con:
        con.execute(
            "update core.orders set shipping_amount = coalesce(shipping_amount, 0) + 1 where customer_id = ?", [a]
        )
        con.execute(
            "update core.order_items set product_id = 'other' "
            "where order_id in (select order_id from core.orders where customer_id = ?)",
            [a],
        )
    assert runs.compute_points(settings, rules).customers_computed == 0
    with duckdb.connect(str(settings.warehouse)) as con:
        con.execute(
            "update core.orders set net_amount_reporting = net_amount_reporting + 10 "
            "where order_id = (select min(order_id) from core.orders where customer_id = ? and status = 'delivered')",
            [b],
        )
    report = runs.compute_points(settings, rules)
    assert report.mode == "incremental" and report.customers_computed == 1
    assert_ledger_is_pure(settings, rules)
    # what each computation wrote, for fct_orders: everyone (the full one), then b; the ones that computed nobody
    # recorded nothing
    changes = "select computation, customer_id from core.ledger_changes order by all"
    assert query(settings.warehouse, changes) == [(1, None), (2, b)]
    # the stored input hashes were updated row by row to what they now are
    stored = query(settings.warehouse, "select * from core.ledger_inputs order by all")
    assert stored == query(settings.warehouse, f"select * from ({runs.ledger_inputs_sql()}) order by all")


def test_the_ledger_computes_a_customer_again_when_an_order_gains_two_equal_lines(generated, tmp_path):
    """Two lines alike in every column the ledger reads (a product bought twice, on two lines): their hashes
    are equal, and a digest that cancels equal values out (xor) would see no change. The customer is computed
    again and the ledger equals the pure ledger."""
    rules = default_rules()
    settings = Settings.resolve(raw_dir=str(generated), warehouse=str(tmp_path / "w" / "loyalty.duckdb"), as_of=AS_OF)
    run(settings, "all", rules)
    assert runs.compute_points(settings, rules).mode == "full"
    [(order_id,)] = query(
        settings.warehouse,
        "select min(order_id) from core.orders o where status = 'delivered' "
        "and exists (select 1 from core.order_items i where i.order_id = o.order_id)",
    )
    with duckdb.connect(str(settings.warehouse)) as con:
        for offset in (100, 101):
            con.execute(
                f"insert into core.order_items select * replace (line_number + {offset} as line_number) "
                "from core.order_items where order_id = ? order by line_number limit 1",
                [order_id],
            )
    report = runs.compute_points(settings, rules)
    assert report.mode == "incremental" and report.customers_computed == 1
    assert_ledger_is_pure(settings, rules)


def test_the_ledger_keeps_the_changes_of_its_last_computations(monkeypatch) -> None:
    """core.ledger_changes keeps the customers of the last LEDGER_CHANGES_KEPT computations; the earlier ones
    give way to a row for everyone at the oldest number kept (a reader built before it builds whole); a full
    computation leaves one such row."""
    monkeypatch.setattr(runs, "LEDGER_CHANGES_KEPT", 2)
    con = duckdb.connect()
    con.execute("create temp table _ledger_computed (customer_id varchar)")

    def compute(*customers: str, incremental: bool = True) -> list[tuple]:
        con.execute("delete from _ledger_computed")
        for customer in customers:
            con.execute("insert into _ledger_computed values (?)", [customer])
        runs._record_ledger_changes(con, incremental)
        return con.sql("select computation, customer_id from core.ledger_changes order by all").fetchall()

    con.execute("create schema core")
    assert compute(incremental=False) == [(1, None)]
    assert compute("a", "b") == [(1, None), (2, "a"), (2, "b")]
    assert compute() == [(1, None), (2, "a"), (2, "b")]  # nobody computed: no number taken
    assert compute("c") == [(1, None), (2, "a"), (2, "b"), (3, "c")]
    assert compute("d") == [(2, None), (3, "c"), (4, "d")]  # 2's customers given up
    assert compute("e") == [(3, None), (4, "d"), (5, "e")]
    assert compute("f", incremental=False) == [(6, None)]


def test_a_month_start_downgrades_a_customer_with_nothing_new(generated, tmp_path):
    """A reversal before the last computation leaves a customer holding Platinum on 0 qualifying points; no order,
    expiry or window exit falls between that computation and the next, but a month start does: the next
    (incremental) computation must still take the customer and record the monthly downgrade."""
    from pipelines import warehouse

    rules = default_rules()
    settings = settings_for(generated, tmp_path)
    run(settings, "all", rules)
    with warehouse.connect(settings.warehouse) as con:
        con.execute(
            """
            insert into core.orders select * replace (
                'esputnik:CRAFT-1' as order_id, 'c_crafted' as customer_id, 'CRAFT-1' as source_order_id,
                'cancelled' as status, timestamp '2025-01-03 10:00' as placed_at,
                timestamp '2025-01-05 10:00' as delivered_at, timestamp '2025-02-10 10:00' as cancelled_at,
                5000.00 as net_amount_reporting, null as coupon_code, null as coupon_discount,
                null as birthday_bonus, null as referral_bonus, null as subscription_bonus, null as bonus_points,
                null as review_incentive)
            from core.orders where status = 'delivered' limit 1
            """
        )

    def at(as_of: str) -> Settings:
        return Settings.resolve(raw_dir=str(generated), warehouse=str(settings.warehouse), as_of=as_of)

    crafted = "select tier, qualifying_points from core.customer_points where customer_id = 'c_crafted'"
    runs.compute_points(at("2025-02-15"), rules)
    assert query(settings.warehouse, crafted) == [("Platinum", 0)]  # held until the next month start

    report = runs.compute_points(at("2025-03-02"), rules)
    assert report.mode == "incremental"
    assert query(settings.warehouse, crafted) == [("Bronze", 0)]
    assert query(
        settings.warehouse,
        "select tier_from, tier_to, changed_at::varchar, reason from core.tier_history "
        "where customer_id = 'c_crafted' order by changed_at",
    ) == [
        ("Bronze", "Platinum", "2025-01-05 10:00:00", "upgrade"),
        ("Platinum", "Bronze", "2025-03-01 00:00:00", "monthly_downgrade"),
    ]
    assert_ledger_is_pure(at("2025-03-02"), rules)


def test_a_run_hashes_again_only_the_files_that_changed(generated, tmp_path, monkeypatch) -> None:
    """A file with the path, size and times recorded at the last ingest is not read to hash it; a file rewritten
    in place, even to the same size with its modification time set back, is (its status-change time moved)."""
    import os

    from pipelines import reading

    raw = tmp_path / "raw"
    files = sorted(p for p in generated.rglob("*.ndjson") if p.is_file())[:3]
    for path in files:
        target = raw / path.relative_to(generated)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    settings = settings_for(raw, tmp_path / "w")
    hashed: list[str] = []
    real = reading.sha256_of
    monkeypatch.setattr(reading, "sha256_of", lambda path: hashed.append(path.name) or real(path))

    runs.ingest(settings, default_rules(), run_id="day-1")
    assert len(hashed) == 3
    hashed.clear()
    runs.ingest(settings, default_rules(), run_id="day-2")
    assert hashed == []

    changed = raw / files[1].relative_to(generated)
    before = changed.stat()
    lines = changed.read_text().splitlines(keepends=True)
    changed.write_text("".join(lines[1:] + lines[:1]))  # the same bytes in another order: same size
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert changed.stat().st_size == before.st_size and changed.stat().st_mtime_ns == before.st_mtime_ns
    report = runs.ingest(settings, default_rules(), run_id="day-3")
    assert hashed == [changed.name]
    assert report.files_ingested == 1  # new content, so a new file
