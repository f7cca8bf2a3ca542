"""End to end: `loyalty run` and the Dagster assets into a temporary warehouse, exit codes, checks."""

import gzip
import shutil

import dagster as dg
import duckdb
import pytest

from pipelines import cli
from pipelines.definitions import defs
from pipelines.defs import ingest as ingest_defs
from pipelines.defs.resources import LoyaltySettings
from pipelines.rules import default_rules_path
from pipelines.settings import ENV
from tests.helpers import SEEDS


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)
    # The daily exports and the report land beside each test's warehouse, never in the repository's data/.
    monkeypatch.setenv(ENV["exports_dir"], str(tmp_path / "exports"))
    monkeypatch.setenv(ENV["reports_dir"], str(tmp_path / "reports"))
    yield


@pytest.fixture
def raw(tmp_path):
    target = tmp_path / "raw"
    shutil.copytree(SEEDS, target)
    return target


def _query(warehouse, sql):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_definitions_load_with_assets_checks_and_resource():
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "core/order_events",
        "core/quarantine",
        "core/ingest_files",
        "core/orders",
        "core/order_items",
        "core/customers",
    } <= keys
    check_names = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert {"conservation", "order_id_unique", "quarantine_keeps_raw_text"} <= check_names


def test_assets_materialize_into_a_temporary_warehouse(tmp_path, raw):
    warehouse = tmp_path / "wh.duckdb"
    result = dg.materialize(
        [*ingest_defs.assets, *ingest_defs.asset_checks],
        resources={"settings": LoyaltySettings(raw_dir=str(raw), warehouse=str(warehouse))},
    )
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert len(result.get_asset_check_evaluations()) == 3
    assert _query(warehouse, "select count(*) from core.orders") == [(5,)]
    assert _query(
        warehouse, "select count(*), count(distinct customer_id) from core.orders where customer_id is not null"
    ) == [(5, 4)]
    money_type = _query(
        warehouse,
        "select data_type from information_schema.columns where table_schema='core' "
        "and table_name='orders' and column_name='net_amount'",
    )
    assert money_type == [("DECIMAL(18,2)",)]
    ts_type = _query(
        warehouse,
        "select data_type from information_schema.columns where table_schema='core' "
        "and table_name='orders' and column_name='placed_at'",
    )
    assert ts_type == [("TIMESTAMP",)]


def test_loyalty_run_twice_ingests_each_file_once(tmp_path, raw, capsys):
    warehouse = tmp_path / "wh" / "loyalty.duckdb"
    args = ["run", "--raw-dir", str(raw), "--warehouse", str(warehouse), "--as-of", "2024-12-31"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "8 file(s) ingested: 11 records read, 11 accepted, 0 quarantined" in out
    assert "orders       5: cancelled 1, delivered 2, pending 2" in out
    assert "status       ok" in out
    before = _query(warehouse, "select * from core.orders order by order_id")
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "0 file(s) ingested" in out
    assert _query(warehouse, "select count(*) from core.order_events") == [(11,)]
    assert _query(warehouse, "select * from core.orders order by order_id") == before
    assert _query(warehouse, "select count(*) from core.ingest_files") == [(8,)]


def test_unreadable_and_bad_records_are_reported_not_fatal(tmp_path, raw, capsys):
    (raw / "esputnik" / "broken.ndjson.gz").write_bytes(b"not gzip at all")
    (raw / "esputnik" / "mixed.ndjson").write_text(
        '{"externalOrderId": "E9", "externalCustomerId": "C9", "totalCost": 5, "status": "LOST",'
        ' "date": "2024-01-01T00:00:00+00:00", "email": "z@z.io"}\n{"truncated": \n'
    )
    warehouse = tmp_path / "wh.duckdb"
    code = cli.main(["run", "--raw-dir", str(raw), "--warehouse", str(warehouse), "--as-of", "2024-12-31"])
    out = capsys.readouterr().out
    assert code == 0
    assert "unreadable esputnik/broken.ndjson.gz" in out
    assert "malformed_json 1" in out and "unknown_status 1" in out
    rows = _query(warehouse, "select reason_code, record_locator, raw_record from core.quarantine order by 2")
    assert rows == [
        (
            "unknown_status",
            "line 1",
            '{"externalOrderId": "E9", "externalCustomerId": "C9", "totalCost": 5, '
            '"status": "LOST", "date": "2024-01-01T00:00:00+00:00", "email": "z@z.io"}',
        ),
        ("malformed_json", "line 2", '{"truncated": '),
    ]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOYALTY_DUCKDB_MEMORY", "lots"),
        ("LOYALTY_DBT_MEMORY", "3 gigs"),
        ("LOYALTY_DBT_THREADS", "two"),
        ("LOYALTY_DBT_THREADS", "0"),
    ],
)
def test_a_bad_tuning_variable_exits_2_before_any_work(tmp_path, raw, capsys, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    warehouse = tmp_path / "wh.duckdb"
    assert cli.main(["run", "--raw-dir", str(raw), "--warehouse", str(warehouse), "--as-of", "2024-12-31"]) == 2
    err = capsys.readouterr().err
    assert variable in err and repr(value) in err and "Traceback" not in err
    assert not warehouse.exists()


def test_bad_usage_exits_2_with_a_message(tmp_path, raw, capsys):
    warehouse = str(tmp_path / "wh.duckdb")
    assert cli.main(["run", "--raw-dir", str(tmp_path / "nope"), "--warehouse", warehouse]) == 2
    assert "raw directory" in capsys.readouterr().err
    assert cli.main(["run", "--raw-dir", str(raw), "--warehouse", warehouse, "--as-of", "31/12/2024"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
    rules = tmp_path / "rules.yaml"
    rules.write_text(default_rules_path().read_text().replace("expiry_days:", "expiry_dayz:"))
    assert cli.main(["run", "--raw-dir", str(raw), "--warehouse", warehouse, "--rules", str(rules)]) == 2
    err = capsys.readouterr().err
    assert "expiry_dayz" in err and "unknown key" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--no-such-option"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "wh.duckdb").exists()


def test_failed_check_exits_1(tmp_path, raw, capsys):
    warehouse = tmp_path / "wh.duckdb"
    args = ["run", "--raw-dir", str(raw), "--warehouse", str(warehouse), "--as-of", "2024-12-31"]
    assert cli.main(args) == 0
    capsys.readouterr()
    with duckdb.connect(str(warehouse)) as con:  # break conservation behind the pipeline's back
        con.execute("update core.ingest_files set records_read = records_read + 1 where path like 'brevo/01%'")
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED check core/ingest_files:conservation" in out


def test_gzip_copy_of_a_known_file_is_not_ingested_twice(tmp_path, raw, capsys):
    source = raw / "esputnik" / "01_request_body.json"
    shutil.copyfile(source, raw / "esputnik" / "02_same_again.json")
    (raw / "esputnik" / "03_gz.json.gz").write_bytes(gzip.compress(source.read_bytes()))
    warehouse = tmp_path / "wh.duckdb"
    assert cli.main(["run", "--raw-dir", str(raw), "--warehouse", str(warehouse)]) == 0
    rows = _query(
        warehouse,
        "select path, records_read, error is not null from core.ingest_files where source = 'esputnik' order by path",
    )
    assert rows == [
        ("esputnik/01_request_body.json", 1, False),
        ("esputnik/02_same_again.json", 0, True),
        ("esputnik/03_gz.json.gz", 1, False),
    ]


def test_rules_without_a_rate_for_a_currency_in_the_data_exit_2(tmp_path, raw, capsys):
    warehouse = tmp_path / "wh.duckdb"
    args = ["run", "--raw-dir", str(raw), "--warehouse", str(warehouse), "--as-of", "2024-12-31"]
    assert cli.main(args) == 0
    rules = tmp_path / "rules.yaml"
    text = default_rules_path().read_text()
    rules.write_text(text.replace(", BRL: 0.18}", "}").replace("bonifiq: BRL", "bonifiq: USD"))
    capsys.readouterr()
    assert cli.main([*args, "--rules", str(rules)]) == 2
    err = capsys.readouterr().err
    assert "fx_rates" in err and "BRL" in err


def test_a_shops_own_rules_reach_the_ledger_and_the_marts(tmp_path, raw, capsys):
    rules = tmp_path / "rules.yaml"
    text = default_rules_path().read_text()
    rules.write_text(
        text.replace("first_purchase_bonus: 100", "first_purchase_bonus: 250")
        .replace("{name: Gold,     min_points: 2500", "{name: Ouro,     min_points: 2500")
        .replace("frequency_bins: [1, 2, 3, 5]", "frequency_bins: [1, 2, 4, 8]")
    )
    warehouse = tmp_path / "wh.duckdb"
    args = ["run", "--raw-dir", str(raw), "--warehouse", str(warehouse), "--as-of", "2024-12-31", "--rules", str(rules)]
    assert cli.main(args) == 0, capsys.readouterr()
    bonuses = _query(warehouse, "select distinct points from core.points_ledger where rule = 'first_purchase'")
    assert bonuses == [(250,)]
    assert _query(warehouse, "select count(*) from marts.customer_rfm") == [(2,)]  # the two delivered buyers
