"""The dbt project builds (models, unit tests and data tests) against a warehouse shaped like the Python side
writes it.

The `core` tables are made from the canonical column lists of `pipelines.schemas`, so a column renamed there
and not in the staging views fails here, not in a scheduled run. The ledger and CLV tables are made from the
columns the dbt sources read (`DBT_READ_COLUMNS`). `run_dbt_build` and `create_core` are shared with
tests/test_marts.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pipelines.schemas import (
    CUSTOMER_COLUMNS,
    EVENT_COLUMNS,
    INGEST_FILE_COLUMNS,
    ORDER_COLUMNS,
    ORDER_ITEM_COLUMNS,
    QUARANTINE_COLUMNS,
    conform,
)
from pipelines.warehouse import table_names

DBT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"

# Columns of the core tables written by the ledger and CLV steps that the staging views read (SPEC §5, §6.1).
DBT_READ_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    "points_ledger": {
        "entry_id": pl.String,
        "customer_id": pl.String,
        "order_id": pl.String,
        "entry_type": pl.String,
        "points": pl.Int64,
        "effective_at": pl.Datetime("us"),
        "rule": pl.String,
        "balance_after": pl.Int64,
    },
    "customer_points": {
        "customer_id": pl.String,
        "balance": pl.Int64,
        "pending_points": pl.Int64,
        "lifetime_earned": pl.Int64,
        "lifetime_redeemed": pl.Int64,
        "lifetime_expired": pl.Int64,
        "tier": pl.String,
        "qualifying_points": pl.Int64,
    },
    "tier_history": {
        "customer_id": pl.String,
        "tier_from": pl.String,
        "tier_to": pl.String,
        "changed_at": pl.Datetime("us"),
        "reason": pl.String,
    },
    "points_reconciliation": {
        "order_id": pl.String,
        "customer_id": pl.String,
        "computed_points": pl.Int64,
        "computed_bonus": pl.Int64,
        "reported_points_earned": pl.Int64,
        "reported_points_awarded": pl.Int64,
        "computed_tier_after": pl.String,
        "reported_tier_after": pl.String,
    },
    "clv_customers": {
        "customer_id": pl.String,
        "frequency_x": pl.Int64,
        "recency_t_x": pl.Float64,
        "age_T": pl.Float64,
        "monetary_value": pl.Float64,
        "predicted_purchases": pl.Float64,
        "p_alive": pl.Float64,
        "expected_avg_spend": pl.Float64,
        "clv": pl.Float64,
    },
    "clv_model_params": {
        "model": pl.String,
        "parameter": pl.String,
        "value": pl.Float64,
        "customers_used": pl.Int64,
        "log_likelihood": pl.Float64,
        "converged": pl.Boolean,
        "as_of": pl.Date,
    },
}
CORE_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    "orders": ORDER_COLUMNS,
    "order_items": ORDER_ITEM_COLUMNS,
    "order_events": EVENT_COLUMNS,
    "customers": CUSTOMER_COLUMNS,
    "quarantine": QUARANTINE_COLUMNS,
    "ingest_files": INGEST_FILE_COLUMNS,
    **DBT_READ_COLUMNS,
}
STAGING_MODELS = {f"stg_core__{name}" for name in CORE_COLUMNS}
MART_MODELS = {
    "customer_rfm",
    "rfm_segment_summary",
    "rfm_history",
    "tier_migration",
    "points_redemption",
    "customer_lifetime_value",
    "clv_model_params",
    "order_value_trend",
    "campaign_performance",
    "points_reconciliation",
    "fct_orders",
    "dim_customers",
}
PII_COLUMNS = {
    "email",
    "phone",
    "first_name",
    "last_name",
    "document_hash",
    "source_customer_id",
    "raw_record",
}

BREVO_FILE = "brevo/2024/orders.ndjson"
ESPUTNIK_FILE = "esputnik/batch.json"


def _core_tables() -> dict[str, pl.DataFrame]:
    """Two or three rows per core table, consistent with each other (keys, files, customers)."""
    orders = pl.DataFrame(
        [
            {
                "order_id": "brevo:1001",
                "customer_id": "c-ana",
                "source": "brevo",
                "source_order_id": "1001",
                "status": "delivered",
                "source_status": "Delivered",
                "placed_at": datetime(2024, 3, 1, 10, 0),
                "delivered_at": datetime(2024, 3, 4, 9, 30),
                "currency": "USD",
                "net_amount": Decimal("120.00"),
                "net_amount_reporting": Decimal("120.00"),
                "is_subscription": False,
                "source_file": BREVO_FILE,
            },
            {
                "order_id": "bonifiq:A-7",
                "customer_id": "c-bia",
                "source": "bonifiq",
                "source_order_id": "A-7",
                "status": "cancelled",
                "source_status": "Cancelado",
                "placed_at": datetime(2024, 3, 2, 12, 0),
                "cancelled_at": datetime(2024, 3, 5, 8, 0),
                "currency": "BRL",
                "net_amount": Decimal("120.00"),
                "net_amount_reporting": Decimal("21.60"),
                "coupon_code": "LOYAL10",
                "source_file": "bonifiq/orders.json",
            },
            {
                "order_id": "esputnik:E-9",
                "customer_id": "c-ana",
                "source": "esputnik",
                "source_order_id": "E-9",
                "status": "abandoned",
                "source_status": "ABANDONED_SHOPPING_CART",
                "placed_at": datetime(2024, 3, 3, 18, 15),
                "currency": "USD",
                "net_amount": Decimal("35.50"),
                "net_amount_reporting": Decimal("35.50"),
                "source_file": ESPUTNIK_FILE,
            },
        ]
    )
    order_items = pl.DataFrame(
        [
            {
                "order_id": "brevo:1001",
                "line_number": 1,
                "product_id": "P1",
                "name": "Tote",
                "categories": ["Eco-Friendly"],
                "quantity": 2,
                "unit_price": Decimal("40.00"),
                "line_amount": Decimal("80.00"),
            },
            {
                "order_id": "brevo:1001",
                "line_number": 2,
                "product_id": "P2",
                "name": "Watch",
                "categories": ["Luxury", "Accessories"],
                "quantity": 1,
                "unit_price": Decimal("40.00"),
                "line_amount": Decimal("40.00"),
            },
        ]
    )
    order_events = pl.DataFrame(
        [
            {
                "event_id": "e1",
                "record_kind": "order",
                "order_id": "brevo:1001",
                "source": "brevo",
                "source_order_id": "1001",
                "status": "pending",
                "currency": "USD",
                "email": "ana@example.com",
                "record_locator": "line 1",
                "record_index": 0,
                "source_file": BREVO_FILE,
                "ingested_at": datetime(2024, 3, 6),
            },
            {
                "event_id": "e2",
                "record_kind": "update",
                "order_id": "brevo:1001",
                "source": "brevo",
                "source_order_id": "1001",
                "status": "delivered",
                "delivered_at": datetime(2024, 3, 4, 9, 30),
                "record_locator": "line 2",
                "record_index": 1,
                "source_file": BREVO_FILE,
                "ingested_at": datetime(2024, 3, 6),
            },
        ]
    )
    customers = pl.DataFrame(
        [
            {
                "customer_id": "c-ana",
                "email": "ana@example.com",
                "first_seen_at": datetime(2024, 3, 1, 10, 0),
                "sources": ["brevo", "esputnik"],
                "source_customer_ids": ["brevo:77"],
            },
            {
                "customer_id": "c-bia",
                "document_hash": "9f2c",
                "first_seen_at": datetime(2024, 3, 2, 12, 0),
                "sources": ["bonifiq"],
                "source_customer_ids": [],
            },
        ]
    )
    quarantine = pl.DataFrame(
        [
            {
                "source": "esputnik",
                "source_file": ESPUTNIK_FILE,
                "record_locator": "orders[1]",
                "reason_code": "missing_contact",
                "reason": "neither email nor phone",
                "raw_record": '{"externalOrderId": "E-10"}',
                "ingested_at": datetime(2024, 3, 6),
                "run_id": "run-1",
            },
            {
                "source": "brevo",
                "source_file": BREVO_FILE,
                "record_locator": "line 3",
                "reason_code": "malformed_json",
                "reason": "unterminated string",
                "raw_record": '{"id": "10',
                "ingested_at": datetime(2024, 3, 6),
                "run_id": "run-1",
            },
        ]
    )
    ingest_files = pl.DataFrame(
        [
            {
                "path": BREVO_FILE,
                "source": "brevo",
                "sha256": "a" * 64,
                "records_read": 3,
                "records_accepted": 2,
                "records_quarantined": 1,
                "first_ingested_at": datetime(2024, 3, 6),
                "last_ingested_at": datetime(2024, 3, 6),
            },
            {
                "path": ESPUTNIK_FILE,
                "source": "esputnik",
                "sha256": "b" * 64,
                "records_read": 2,
                "records_accepted": 1,
                "records_quarantined": 1,
                "first_ingested_at": datetime(2024, 3, 6),
                "last_ingested_at": datetime(2024, 3, 6),
            },
        ]
    )
    return {
        "orders": conform(orders, ORDER_COLUMNS),
        "order_items": conform(order_items, ORDER_ITEM_COLUMNS),
        "order_events": conform(order_events, EVENT_COLUMNS),
        "customers": conform(customers, CUSTOMER_COLUMNS),
        "quarantine": conform(quarantine, QUARANTINE_COLUMNS),
        "ingest_files": conform(ingest_files, INGEST_FILE_COLUMNS),
    }


def create_core(warehouse: Path, tables: dict[str, pl.DataFrame]) -> None:
    """Schema `core` with every table of CORE_COLUMNS: the frames given (conformed), empty tables for the rest."""
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema core")
        for name, columns in CORE_COLUMNS.items():
            frame = conform(tables[name], columns) if name in tables else pl.DataFrame(schema=columns)
            con.register("frame", frame.to_arrow())
            con.execute(f"create table core.{name} as select * from frame")
            con.unregister("frame")


def run_dbt(tmp_path: Path, warehouse: Path, command: str, *args: str) -> subprocess.CompletedProcess:
    """`dbt <command> <args>` over `warehouse`, with target and logs in `tmp_path` and no partial parse."""
    # A subprocess, as dagster-dbt runs it: in-process dbtRunner leaves dbt-duckdb's read-write handle on
    # the file open, and this process could then not open it read-only.
    return subprocess.run(
        [
            sys.executable, "-m", "dbt.cli.main", command,
            "--project-dir", str(DBT_PROJECT_DIR),
            "--profiles-dir", str(DBT_PROJECT_DIR),
            "--target-path", str(tmp_path / "target"),
            "--log-path", str(tmp_path / "logs"),
            "--no-partial-parse",
            *args,
        ],
        cwd=tmp_path,
        env={**os.environ, "LOYALTY_WAREHOUSE": str(warehouse)},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip


def run_dbt_build(
    tmp_path: Path, warehouse: Path, dbt_vars: dict | None = None, select: str | None = None
) -> list[dict]:
    """`dbt build` (of `select`, default everything) over `warehouse`, target and logs in `tmp_path`; asserts every
    node passed, returns the results."""
    completed = run_dbt(
        tmp_path,
        warehouse,
        "build",
        *(["--vars", json.dumps(dbt_vars)] if dbt_vars else []),
        *(["--select", select, "--indirect-selection", "cautious"] if select else []),
    )
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-4000:]
    run_results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    not_passed = [(r["unique_id"], r["status"]) for r in run_results if r["status"] not in ("success", "pass")]
    assert not_passed == []
    return run_results


@pytest.fixture(scope="module")
def built_warehouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """A warehouse with the core tables, after one `dbt build`; returns its path and dbt's node results."""
    tmp_path = tmp_path_factory.mktemp("dbt")
    warehouse = tmp_path / "loyalty.duckdb"
    create_core(warehouse, _core_tables())
    return warehouse, run_dbt_build(tmp_path, warehouse, {"as_of": "2024-03-31"})


def test_build_creates_one_staging_view_per_core_table(built_warehouse: tuple[Path, list[dict]]) -> None:
    warehouse, run_results = built_warehouse
    models = {r["unique_id"] for r in run_results if r["unique_id"].startswith("model.")}
    staging = {m for m in models if m.startswith("model.loyalty.stg_")}
    assert staging == {f"model.loyalty.{name}" for name in STAGING_MODELS}
    assert {f"model.loyalty.{name}" for name in MART_MODELS} <= models
    assert any(r["unique_id"].startswith("test.") for r in run_results), "the data tests ran"
    assert any(r["unique_id"].startswith("unit_test.") for r in run_results), "the unit tests ran"

    with duckdb.connect(str(warehouse), read_only=True) as con:
        views = con.execute(
            "select table_name from information_schema.tables where table_schema = 'staging' and table_type = 'VIEW'"
        ).fetchall()
        rows = con.execute(
            "select order_id, status, net_amount_reporting, placed_at from staging.stg_core__orders order by order_id"
        ).fetchall()
    assert {name for (name,) in views} == STAGING_MODELS
    assert rows == [
        ("bonifiq:A-7", "cancelled", Decimal("21.60"), datetime(2024, 3, 2, 12, 0)),
        ("brevo:1001", "delivered", Decimal("120.00"), datetime(2024, 3, 1, 10, 0)),
        ("esputnik:E-9", "abandoned", Decimal("35.50"), datetime(2024, 3, 3, 18, 15)),
    ]


def test_staging_exposes_no_pii(built_warehouse: tuple[Path, list[dict]]) -> None:
    warehouse, _ = built_warehouse
    with duckdb.connect(str(warehouse), read_only=True) as con:
        columns = con.execute(
            "select table_name, column_name from information_schema.columns where table_schema = 'staging'"
        ).fetchall()
        customers = con.execute(
            "select customer_id, has_email, has_document from staging.stg_core__customers order by customer_id"
        ).fetchall()
    assert [(table, column) for table, column in columns if column in PII_COLUMNS] == []
    assert customers == [("c-ana", True, False), ("c-bia", False, True)]


def test_a_retired_table_is_dropped(built_warehouse: tuple[Path, list[dict]], tmp_path: Path) -> None:
    """A table an earlier version built and this one does not (int_points_pivoted_to_orders, now a CTE of
    fct_orders) is dropped when fct_orders is built, and fct_orders gets the points from the CTE."""
    warehouse = tmp_path / "loyalty.duckdb"
    warehouse.write_bytes(built_warehouse[0].read_bytes())
    with duckdb.connect(str(warehouse)) as con:
        assert "int_points_pivoted_to_orders" not in table_names(con, "intermediate")
        con.execute("create table intermediate.int_points_pivoted_to_orders as select 'brevo:1001' as order_id")
        con.execute(
            "insert into core.points_ledger (entry_id, customer_id, order_id, entry_type, points, effective_at, rule, "
            "balance_after) values ('p_1', 'c-ana', 'brevo:1001', 'earn', 120, '2024-03-08', 'base', 120), "
            "('p_2', 'c-ana', 'brevo:1001', 'expire', -20, '2024-03-30', 'expiry', 100), "
            "('p_3', 'c-ana', 'brevo:1001', 'expire', -100, '2024-04-30', 'expiry', 0)"  # after the as-of date
        )
    run_dbt_build(tmp_path, warehouse, {"as_of": "2024-03-31"}, select="fct_orders")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert "int_points_pivoted_to_orders" not in table_names(con, "intermediate")
        points = con.execute(
            "select order_id, points_earned, points_expired from marts.fct_orders order by order_id"
        ).fetchall()
    assert points == [("bonifiq:A-7", 0, 0), ("brevo:1001", 120, 20), ("esputnik:E-9", 0, 0)]


def test_uniqueness_tests_report_each_duplicated_key(built_warehouse: tuple[Path, list[dict]], tmp_path: Path) -> None:
    """`unique` (our DuckDB version, macros/test_unique.sql) and `unique_combination_of_columns` find their
    duplicates in two passes (hashes, then values): a repeated key fails its test with that key and its count,
    and a null repeated is no duplicate for `unique`."""
    warehouse = tmp_path / "loyalty.duckdb"
    warehouse.write_bytes(built_warehouse[0].read_bytes())
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "insert into core.order_events select * from core.order_events where order_id = 'brevo:1001' limit 1"
        )
        con.execute("insert into core.order_items select * from core.order_items limit 1")
        con.execute("update core.points_ledger set entry_id = null")  # every entry id null: no duplicate
    selected = [
        "unique_stg_core__order_events_event_id",
        "unique_combination_of_columns_stg_core__order_items_order_id__line_number",
        "unique_stg_core__points_ledger_entry_id",
    ]
    variables = json.dumps({"as_of": "2024-03-31"})
    completed = run_dbt(tmp_path, warehouse, "test", "--store-failures", "--vars", variables, "--select", *selected)
    assert completed.returncode == 1, completed.stdout[-4000:]
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    outcome = {r["unique_id"].split(".")[2]: (r["status"], r["failures"]) for r in results}
    assert outcome == {selected[0]: ("fail", 1), selected[1]: ("fail", 1), selected[2]: ("pass", 0)}
    compiled = next((tmp_path / "target" / "compiled").rglob(f"{selected[0]}.sql")).read_text()
    assert "repeated_hashes" in compiled, "dbt ran this project's unique test, not its own"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        event = con.execute("select event_id from core.order_events where order_id = 'brevo:1001' limit 1").fetchone()
        item = con.execute("select order_id, line_number from core.order_items limit 1").fetchone()
        stored = con.execute(
            "select table_schema, table_name from information_schema.tables where table_schema like '%test__audit'"
        ).fetchall()
        rows = sorted(con.execute(f'select * from "{schema}"."{name}"').fetchall() for schema, name in stored)
    assert rows == sorted([[(event[0], 2)], [(*item, 2)], []])


def test_profiles_defaults_are_the_pipelines(monkeypatch: pytest.MonkeyPatch) -> None:
    """profiles.yml (dbt by hand) and pipelines/settings.py (the pipeline) each hold the tuning defaults."""
    import re

    from pipelines.settings import dbt_memory_limit, dbt_threads

    for variable in ("LOYALTY_DBT_MEMORY", "LOYALTY_DBT_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    profiles = (DBT_PROJECT_DIR / "profiles.yml").read_text()
    defaults = dict(re.findall(r"env_var\('(LOYALTY_DBT_\w+)', '([^']*)'\)", profiles))
    assert defaults == {"LOYALTY_DBT_MEMORY": dbt_memory_limit(), "LOYALTY_DBT_THREADS": str(dbt_threads())}


def test_a_new_as_of_date_keeps_the_parse(tmp_path: Path) -> None:
    """The as-of date reaches dbt as LOYALTY_AS_OF and is read when a model is compiled, not parsed: the next
    day's invocation reuses the saved parse (dbt parses again every file that read a changed environment variable
    while being parsed: 11 files, about 1 s of every daily run), and its SQL carries the new date."""
    warehouse = tmp_path / "loyalty.duckdb"

    def compile_rfm(as_of: str) -> tuple[str, str]:
        completed = subprocess.run(
            [
                sys.executable, "-m", "dbt.cli.main", "compile", "--select", "customer_rfm",
                "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
                "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
            ],
            cwd=tmp_path,
            env={**os.environ, "LOYALTY_WAREHOUSE": str(warehouse), "LOYALTY_AS_OF": as_of},
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stdout[-4000:]
        log = (tmp_path / "logs" / "dbt.log").read_text().rsplit("Running with dbt", 1)[-1]
        compiled = next((tmp_path / "target" / "compiled").rglob("customer_rfm.sql")).read_text()
        return log, compiled

    log, compiled = compile_rfm("2024-03-30")
    assert "cast('2024-03-30' as date)" in compiled
    log, compiled = compile_rfm("2024-03-31")
    assert "Partial parsing enabled, no changes found, skipping parsing" in log
    assert "cast('2024-03-31' as date)" in compiled and "2024-03-30" not in compiled
