"""Security (issue #7): raw paths stay inside the raw directory, segment names never become SQL, the export's
connection cannot write, PII stays where it belongs, and documents are kept only as salted hashes.

The PII tests share one `loyalty generate --orders 2000` + `loyalty run` into a temporary warehouse (about a
minute). Tables that may hold PII, and why:
- core.customers: the one place for contact data (SPEC §3);
- core.order_events: every accepted record as received (SPEC §3), e-mail and phone included, from which
  customers are rebuilt;
- core.quarantine: every rejected record's raw text verbatim (SPEC §3/§4), whatever it holds.
Every other table and view (core, staging, intermediate, marts) must hold no e-mail, phone or CPF/CNPJ.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import os
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from pipelines import cli, exports
from pipelines.defs import ingest as ingest_defs
from pipelines.defs.resources import LoyaltySettings
from pipelines.ingest import parse_files
from pipelines.reading import discover_files
from pipelines.settings import DEFAULTS, ENV
from tests.helpers import default_rules, parse, seed_records, write

SALT = "security-test-salt"
PII_TABLES = {("core", "customers"), ("core", "order_events"), ("core", "quarantine")}
PATTERNS = {  # DuckDB regular expressions (RE2)
    "e-mail": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "phone (+ and 10-15 digits)": r"\+\s*\d(?:[\s().-]*\d){9,14}",
    "10-15 digits (phone, CPF, CNPJ)": r"(?:^|[^\w+])\d{10,15}(?:$|\W)",
    "formatted CPF": r"\d{3}\.\d{3}\.\d{3}-\d{2}",
    "formatted CNPJ": r"\d{2}\.?\d{3}\.?\d{3}/\d{4}-?\d{2}",
}


def esputnik_order(order_id: str) -> str:
    return json.dumps(dict(seed_records("esputnik")[0], externalOrderId=order_id))


# --- raw paths stay inside the raw directory ------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the raw directory holding an export nobody asked to read."""
    write(tmp_path, "outside/esputnik/secret.json", esputnik_order("SECRET"))
    write(tmp_path, "outside/secret.json", esputnik_order("SECRET"))
    return tmp_path / "outside"


def read_ids(raw: Path) -> list[str]:
    return parse(raw).events["source_order_id"].to_list()


def test_symlinks_climbing_out_with_dotdot_are_refused(tmp_path: Path, outside: Path) -> None:
    raw = tmp_path / "raw"
    write(raw, "esputnik/inside.json", esputnik_order("INSIDE"))
    (raw / "esputnik" / "up.json").symlink_to(Path("..") / ".." / "outside" / "secret.json")
    (raw / "esputnik" / "deeper").mkdir()
    (raw / "esputnik" / "deeper" / "up.json").symlink_to(Path("../../../outside/secret.json"))
    (raw / "esputnik" / "updir").symlink_to(Path("../../outside/esputnik"), target_is_directory=True)
    files, warnings = discover_files(raw)
    assert [f.rel_path for f in files] == ["esputnik/inside.json"]
    assert sorted(w.split(":")[0] for w in warnings) == [
        "esputnik/deeper/up.json",
        "esputnik/up.json",
        "esputnik/updir",
    ]
    assert all("outside the raw directory" in w for w in warnings)
    assert read_ids(raw) == ["INSIDE"]


def test_absolute_symlinks_to_files_and_directories_outside_are_refused(tmp_path: Path, outside: Path) -> None:
    raw = tmp_path / "raw"
    write(raw, "esputnik/inside.ndjson", esputnik_order("INSIDE") + "\n")
    (raw / "esputnik" / "file.json").symlink_to(outside / "secret.json")
    (raw / "esputnik" / "dir").symlink_to(outside / "esputnik", target_is_directory=True)
    (raw / "bonifiq").symlink_to(outside / "esputnik", target_is_directory=True)  # a whole source directory
    files, warnings = discover_files(raw)
    assert [f.rel_path for f in files] == ["esputnik/inside.ndjson"]
    assert sorted(w.split(":")[0] for w in warnings) == ["bonifiq/secret.json", "esputnik/dir", "esputnik/file.json"]
    assert read_ids(raw) == ["INSIDE"]


def test_symlinks_inside_the_raw_directory_are_read_once(tmp_path: Path) -> None:
    """A file symlink that stays inside is read (under its own name); a directory symlink is never walked,
    so nothing is read twice through it."""
    raw = tmp_path / "raw"
    write(raw, "esputnik/2024/a.json", esputnik_order("A"))
    (raw / "esputnik" / "latest").symlink_to(Path("2024"), target_is_directory=True)
    (raw / "esputnik" / "alias.json").symlink_to(Path("2024") / "a.json")
    files, warnings = discover_files(raw)
    assert warnings == []
    assert [(f.rel_path, f.path) for f in files] == [
        ("esputnik/2024/a.json", (raw / "esputnik/2024/a.json").resolve()),
        ("esputnik/alias.json", (raw / "esputnik/2024/a.json").resolve()),
    ]


def test_the_configured_raw_directory_is_the_boundary_however_it_is_spelled(tmp_path: Path, outside: Path) -> None:
    """An absolute raw directory from the configuration, spelled with `..` or through a symlink: only what is
    under it (as resolved) is read, every path reported is relative to it, none climbs out."""
    raw = tmp_path / "raw"
    write(raw, "esputnik/a.json", esputnik_order("A"))
    (raw / "esputnik" / "escape.json").symlink_to(outside / "secret.json")
    (tmp_path / "link_to_raw").symlink_to(raw, target_is_directory=True)
    spellings = [raw, tmp_path / "raw" / "esputnik" / ".." / ".." / "raw", tmp_path / "link_to_raw"]
    for spelled in spellings:
        assert spelled.is_absolute()
        files, warnings = discover_files(spelled)
        assert [(f.rel_path, f.path) for f in files] == [("esputnik/a.json", (raw / "esputnik/a.json").resolve())]
        assert [w.split(":")[0] for w in warnings] == ["esputnik/escape.json"]
        assert all(not f.rel_path.startswith("/") and ".." not in f.rel_path.split("/") for f in files)


def test_the_real_ingest_reads_nothing_from_outside(tmp_path: Path, outside: Path) -> None:
    """Through the Dagster assets (the path `loyalty run` takes): core tables never see the outside file."""
    raw = tmp_path / "raw"
    write(raw, "esputnik/inside.json", esputnik_order("INSIDE"))
    (raw / "esputnik" / "file.json").symlink_to(outside / "secret.json")
    (raw / "esputnik" / "up.json").symlink_to(Path("../../outside/secret.json"))
    warehouse = tmp_path / "wh.duckdb"
    result = dg.materialize(
        [*ingest_defs.assets, *ingest_defs.asset_checks],
        resources={"settings": LoyaltySettings(raw_dir=str(raw), warehouse=str(warehouse))},
    )
    assert result.success
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select path from core.ingest_files").fetchall() == [("esputnik/inside.json",)]
        assert con.execute("select source_order_id from core.order_events").fetchall() == [("INSIDE",)]


def test_symlink_loops_and_special_files_do_not_stop_the_run(tmp_path: Path) -> None:
    """A symlink loop made discovery raise (RuntimeError from pathlib): now a warning. A FIFO named like an
    export is not a regular file: skipped, never opened (opening it would block)."""
    raw = tmp_path / "raw"
    write(raw, "esputnik/good.json", esputnik_order("GOOD"))
    (raw / "esputnik" / "loop_a.json").symlink_to("loop_b.json")
    (raw / "esputnik" / "loop_b.json").symlink_to("loop_a.json")
    (raw / "esputnik" / "self.ndjson").symlink_to("self.ndjson")
    (raw / "esputnik" / "dangling.json").symlink_to("nowhere.json")
    os.mkfifo(raw / "esputnik" / "pipe.ndjson")
    files, warnings = discover_files(raw)
    assert [f.rel_path for f in files] == ["esputnik/good.json"]
    assert sorted(w.split(":")[0] for w in warnings) == [
        "esputnik/loop_a.json",
        "esputnik/loop_b.json",
        "esputnik/self.ndjson",
    ]
    assert read_ids(raw) == ["GOOD"]


# --- a small warehouse for the export tests -------------------------------------------------------


@pytest.fixture
def small_warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "wh.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema core; create schema marts; create schema staging")
        con.execute("create table staging.rfm_segments as select * from (values ('Champions'), ('At Risk')) t(segment)")
        con.execute(
            "create table marts.customer_rfm as select * from (values ('c1', 'Champions', '545', 5, 4, 5, 3, 6, 9.0))"
            " t(customer_id, segment, rfm_cell, r_score, f_score, m_score, recency_days, frequency, monetary)"
        )
        con.execute(
            "create table core.customers as select * from (values ('c1', 'ana@example.com', '447700900123', 'Ana',"
            " 'Lima', timestamp '2024-01-02 10:00:00')) t(customer_id, email, phone, first_name, last_name,"
            " first_seen_at)"
        )
        con.execute("create table core.customer_points as select 'c1' as customer_id, 10 as balance, 'Gold' as tier")
        con.execute("create table core.clv_customers as select 'c1' as customer_id, 1.5 as clv")
    return path


HOSTILE_SEGMENTS = [
    "Champions'; drop table core.customers; --",
    'Champions"; drop table core.customers; --',
    "x') or 1=1 --",
    "Champions' union all select email from core.customers --",
    "'; attach 'evil.duckdb' as evil; --",
    "Champions]; delete from core.customers; --",
]


@pytest.mark.parametrize("hostile", HOSTILE_SEGMENTS)
def test_segment_names_never_reach_sql_as_text(tmp_path: Path, small_warehouse: Path, hostile: str, capsys) -> None:
    out = tmp_path / "out.csv"
    for segments in ([hostile], ["Champions", hostile]):
        args = ["export", "--segment", *segments, "--format", "csv", "--out", str(out), "--warehouse"]
        code = cli.main([*args, str(small_warehouse)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "unknown segment" in err and "Champions" in err and "Traceback" not in err
        assert not out.exists()
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        assert con.execute("select count(*) from core.customers").fetchone() == (1,)
        assert con.execute("select count(*) from duckdb_databases() where database_name = 'evil'").fetchone() == (0,)
    assert not (tmp_path / "evil.duckdb").exists() and not Path("evil.duckdb").exists()


def test_the_export_connection_is_read_only(tmp_path: Path, small_warehouse: Path, monkeypatch, capsys) -> None:
    """`loyalty export` opens the warehouse read-only: any write through its connection fails."""
    attempts = {
        "create": "create table marts.injected as select 1 as x",
        "insert": "insert into core.customers select * from core.customers",
        "update": "update core.customers set email = 'attacker@example.com'",
        "delete": "delete from core.customers",
        "drop": "drop table core.customers",
        "alter": "alter table core.customers add column stolen varchar",
        "schema": "create schema attacker",
    }
    refused: dict[str, str] = {}
    real_export = exports.export_segments

    def spy(con, segments, fmt, out):
        for name, sql in attempts.items():
            try:
                con.execute(sql)
            except duckdb.Error as exc:
                refused[name] = str(exc)
        return real_export(con, segments, fmt, out)

    monkeypatch.setattr(exports, "export_segments", spy)
    out = tmp_path / "champions.csv"
    code = cli.main(
        ["export", "--segment", "Champions", "--format", "brevo", "--out", str(out), "--warehouse"]
        + [str(small_warehouse)]
    )
    assert code == 0, capsys.readouterr().err
    assert set(refused) == set(attempts), refused
    assert all("read-only" in message for message in refused.values()), refused
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        assert con.execute("select email from core.customers").fetchall() == [("ana@example.com",)]
        tables = con.execute("select table_schema || '.' || table_name from information_schema.tables").fetchall()
        assert ("marts.injected",) not in tables


# --- PII and documents in a generated warehouse ---------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    """`loyalty generate --orders 2000` then `loyalty run` with a shop's own document salt."""
    root = tmp_path_factory.mktemp("generated")
    raw, warehouse = root / "raw", root / "wh" / "loyalty.duckdb"
    with pytest.MonkeyPatch.context() as env:
        for name in ENV.values():
            env.delenv(name, raising=False)  # and whatever `loyalty run` sets is undone afterwards
        env.setenv(ENV["document_salt"], SALT)
        assert cli.main(["generate", "--orders", "2000", "--out", str(raw)]) == 0
        args = ["run", "--raw-dir", str(raw), "--warehouse", str(warehouse), "--as-of", "2024-12-31"]
        assert cli.main([*args, "--exports-dir", str(root / "exports")]) == 0
    return {"raw": raw, "warehouse": warehouse}


def text_columns(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    """(schema, table or view, column) of every text-holding column (VARCHAR, JSON, lists of them)."""
    return con.execute(
        """
        select c.table_schema, c.table_name, c.column_name
        from information_schema.columns as c
        where c.table_catalog = current_database() and (c.data_type like '%VARCHAR%' or c.data_type like '%JSON%')
        order by 1, 2, c.ordinal_position
        """
    ).fetchall()


def test_pii_stays_in_customers_events_and_quarantine(generated) -> None:
    with duckdb.connect(str(generated["warehouse"]), read_only=True) as con:
        listed = (
            "select table_schema, table_name from information_schema.tables where table_catalog = current_database()"
        )
        relations = set(con.execute(listed).fetchall())
        schemas = {s for s, _ in relations}
        assert {"core", "staging", "intermediate", "marts"} <= schemas
        assert {("marts", "customer_rfm"), ("marts", "dim_customers"), ("staging", "stg_core__customers")} <= relations
        found = []
        scanned = 0
        for schema, table, column in text_columns(con):
            if (schema, table) in PII_TABLES or schema not in ("core", "staging", "intermediate", "marts"):
                continue
            scanned += 1
            for label, pattern in PATTERNS.items():
                hits, example = con.execute(
                    f'select count(*), any_value("{column}"::varchar) from "{schema}"."{table}" '
                    f'where regexp_matches("{column}"::varchar, ?)',
                    [pattern],
                ).fetchone()
                if hits:
                    found.append((f"{schema}.{table}.{column}", label, hits, example))
        assert scanned > 100  # every text column of every other table and view
        assert found == []
        # the patterns do find PII where it is expected: they are not blind
        for label in ("e-mail", "10-15 digits (phone, CPF, CNPJ)"):
            column = "email" if label == "e-mail" else "phone"
            (hits,) = con.execute(
                f"select count(*) from core.customers where regexp_matches({column}, ?)", [PATTERNS[label]]
            ).fetchone()
            assert hits > 100, label


def raw_documents(raw: Path) -> set[str]:
    """Every BonifiQ buyer document (Customer.OriginalId that is not an e-mail) in the generated raw files."""
    found: set[str] = set()

    def keep(value: object) -> None:
        if isinstance(value, str) and value.strip() and "@" not in value:
            found.add(value.strip())

    def keep_record(record: object) -> None:
        if isinstance(record, dict) and isinstance(record.get("Customer"), dict):
            keep(record["Customer"].get("OriginalId"))

    for path in sorted((raw / "bonifiq").rglob("*")):
        if not path.is_file():
            continue
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
        name = path.name.removesuffix(".gz")
        if name.endswith(".csv"):
            for row in csv.DictReader(io.StringIO(text)):
                keep(row.get("Customer.OriginalId"))
        elif name.endswith((".ndjson", ".jsonl")):
            for line in text.splitlines():
                with contextlib.suppress(ValueError):  # a deliberately bad record
                    keep_record(json.loads(line))
        else:
            try:
                document = json.loads(text)
            except ValueError:
                continue
            if isinstance(document, dict):
                document = document.get("orders", [document])
            for record in document if isinstance(document, list) else []:
                keep_record(record)
    return found


def digits(document: str) -> str:
    return "".join(ch for ch in document if ch.isdigit())


def salted(document: str, salt: str) -> str:
    return "d_" + hashlib.sha256((salt + digits(document)).encode()).hexdigest()[:32]


def test_documents_are_stored_only_as_salted_hashes(generated) -> None:
    """No CPF/CNPJ in clear outside core.quarantine, whose raw text is the rejected record verbatim (SPEC §4);
    every document's hash is salted with LOYALTY_DOCUMENT_SALT, not the public default."""
    documents = raw_documents(generated["raw"])
    assert len(documents) > 10
    forms = sorted(documents | {digits(d) for d in documents})
    with duckdb.connect(str(generated["warehouse"]), read_only=True) as con:
        con.execute("create temp table documents as select unnest(?::varchar[]) as document", [forms])
        in_clear = []
        for schema, table, column in text_columns(con):
            (hits,) = con.execute(
                f'select count(*) from "{schema}"."{table}" as t '
                f'inner join documents as d on contains(t."{column}"::varchar, d.document)'
            ).fetchone()
            if hits:
                in_clear.append(f"{schema}.{table}.{column}")
        assert set(in_clear) <= {"core.quarantine.raw_record", "core.quarantine.record_json"}, in_clear
        hashes = "select distinct document_hash from core.{} where document_hash is not null"
        stored = {h for (h,) in con.execute(hashes.format("customers")).fetchall()}
        from_events = {h for (h,) in con.execute(hashes.format("order_events")).fetchall()}
    assert stored == from_events and len(stored) >= 10  # every accepted document reaches its customer
    assert stored <= {salted(d, SALT) for d in documents}
    assert not stored & {salted(d, DEFAULTS["document_salt"]) for d in documents}


def test_changing_the_salt_changes_the_stored_hash(tmp_path: Path) -> None:
    record = dict(seed_records("bonifiq")[1], OriginalId="DOC-1")  # Customer.OriginalId is a CPF
    document = record["Customer"]["OriginalId"]
    write(tmp_path, "bonifiq/a.json", json.dumps(record))
    files, _ = discover_files(tmp_path)
    hashes = {}
    for salt in ("shop-salt-1", "shop-salt-2"):
        result = parse_files(files, default_rules(), run_id="t", ingested_at=datetime(2024, 6, 1), document_salt=salt)
        (hashes[salt],) = result.events["document_hash"].to_list()
        assert hashes[salt] == salted(document, salt)
        event = " ".join(str(value) for value in result.events.drop("document_hash").row(0))
        assert document not in event and digits(document) not in event  # the hash is all that is kept
    assert hashes["shop-salt-1"] != hashes["shop-salt-2"]
    assert pl.Series(list(hashes.values())).str.starts_with("d_").all()
