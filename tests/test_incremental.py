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


def test_a_run_on_new_files_merges_only_the_touched_orders_and_matches_a_full_rebuild(generated, tmp_path) -> None:
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
    for path in files:
        target = history / path.relative_to(generated)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    (history / "esputnik" / "2025-06-20-link.ndjson").write_text(link + "\n")
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


def test_identity_in_the_warehouse_equals_identity_over_the_events(generated, tmp_path) -> None:
    """runs.py resolves customers with DuckDB reducing the events first; the pure functions are the reference."""
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
        order_customer, customers = resolve_in_warehouse(con)
        events = warehouse.read_table(con, "order_events")
    expected_orders, _ = resolve(events)
    expected_customers = build_customers(events, expected_orders)
    assert order_customer.sort("order_id").equals(expected_orders.sort("order_id"))
    assert customers.height == expected_customers.height > 100
    assert customers.equals(expected_customers)
    assert customers["source_customer_ids"].list.len().sum() > 0 and customers["document_hash"].null_count() > 0
    changed = customers.filter(pl.col("source_customer_ids").list.contains("esputnik:C-CHG"))
    assert changed["first_name"].to_list() == ["Bia"]
