"""`loyalty export`: contact files each tool can import, skipped contacts, formula injection, bad segments."""

import csv
import io

import duckdb
import pytest

from pipelines import cli
from pipelines.exports import UnknownSegment, export_segments

SEGMENTS = ["Champions", "Hibernating", "At Risk"]


@pytest.fixture
def warehouse(tmp_path):
    path = tmp_path / "wh.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema core; create schema marts; create schema staging")
        con.execute(
            "create table staging.rfm_segments as select * from (values ('Champions'), ('Hibernating'), "
            "('At Risk')) as t(segment)"
        )
        con.execute("""create table marts.customer_rfm as select * from (values
            ('c1', 'Champions', '545', 5, 4, 5, 3, 6, 900.00),
            ('c2', 'Champions', '555', 5, 5, 5, 1, 9, 1500.00),
            ('c3', 'Champions', '544', 5, 4, 4, 2, 5, 700.00),
            ('c4', 'Champions', '545', 5, 4, 5, 4, 6, 880.00),
            ('c5', 'Hibernating', '111', 1, 1, 1, 600, 1, 10.00))
            as t(customer_id, segment, rfm_cell, r_score, f_score, m_score, recency_days, frequency, monetary)""")
        con.execute("""create table core.customers as select * from (values
            ('c1', 'ana@example.com', '447700900123', 'Ana', 'Lima', timestamp '2024-01-02 10:00:00'),
            ('c2', 'bob@example.com', null, '=HYPERLINK("http://evil")', '-Smith', timestamp '2024-02-03 10:00:00'),
            ('c3', null, null, 'Nobody', 'Reachable', timestamp '2024-03-04 10:00:00'),
            ('c4', '[email protected]', '5511987654321', 'Caio', '@home', timestamp '2024-04-05 10:00:00'),
            ('c5', 'old@example.com', null, 'Old', 'Timer', timestamp '2022-01-01 10:00:00'))
            as t(customer_id, email, phone, first_name, last_name, first_seen_at)""")
        con.execute("""create table core.customer_points as select * from (values
            ('c1', 1200, 'Silver'), ('c2', -40, 'Gold'), ('c4', 0, 'Bronze'))
            as t(customer_id, balance, tier)""")
        con.execute(
            "create table core.clv_customers as select * from (values ('c1', 123.456), ('c2', 50.0)) "
            "as t(customer_id, clv)"
        )
    return path


def _rows(path, delimiter):
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")), delimiter=delimiter))


def test_brevo_file_imports_with_its_attribute_headers(tmp_path, warehouse):
    out = tmp_path / "brevo.csv"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        result = export_segments(con, ["Champions"], "brevo", out)
    assert (result.written, result.skipped_without_contact) == (3, 1)  # c3 has neither e-mail nor phone
    rows = _rows(out, ";")
    assert list(rows[0])[:9] == [
        "EMAIL",
        "SMS",
        "FIRSTNAME",
        "LASTNAME",
        "RFM_SEGMENT",
        "RFM_CELL",
        "LOYALTY_TIER",
        "POINTS_BALANCE",
        "CLV_12M",
    ]
    by_id = {r["RFM_CELL"] + r["FIRSTNAME"]: r for r in rows}
    ana = by_id["545Ana"]
    assert (ana["EMAIL"], ana["SMS"], ana["LOYALTY_TIER"], ana["POINTS_BALANCE"], ana["CLV_12M"]) == (
        "ana@example.com",
        "+447700900123",
        "Silver",
        "1200",
        "123.46",
    )
    # formula injection neutralised; the phone's leading + is not touched
    bob = next(r for r in rows if r["EMAIL"] == "bob@example.com")
    assert bob["FIRSTNAME"] == '\'=HYPERLINK("http://evil")' and bob["LASTNAME"] == "'-Smith"
    # an address that is not one is dropped, the contact kept for its phone
    caio = next(r for r in rows if r["SMS"] == "+5511987654321")
    assert caio["EMAIL"] == "" and caio["LASTNAME"] == "'@home"


def test_klaviyo_esputnik_and_csv_formats(tmp_path, warehouse):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for fmt in ("klaviyo", "esputnik", "csv"):
            export_segments(con, ["Champions", "Hibernating"], fmt, tmp_path / f"{fmt}.csv")
    klaviyo = _rows(tmp_path / "klaviyo.csv", ",")
    assert list(klaviyo[0])[:2] == ["Email", "Phone Number"]
    assert {r["negative_balance"] for r in klaviyo} == {"true", "false"}
    assert next(r for r in klaviyo if r["Email"] == "ana@example.com")["first_seen_on"] == "2024-01-02"
    esputnik = _rows(tmp_path / "esputnik.csv", ",")
    assert list(esputnik[0]) == [
        "email",
        "phone",
        "firstName",
        "lastName",
        "rfm_segment",
        "rfm_cell",
        "loyalty_tier",
        "points_balance",
        "clv",
    ]
    assert len(esputnik) == 4  # three Champions with a contact and one Hibernating
    full = _rows(tmp_path / "csv.csv", ",")
    assert {"customer_id", "r_score", "recency_days", "monetary"} <= set(full[0])


def test_unknown_segment_lists_the_names_and_never_reaches_sql(tmp_path, warehouse, capsys):
    hostile = "x'); drop table core.customers; --"
    with duckdb.connect(str(warehouse), read_only=True) as con, pytest.raises(UnknownSegment) as error:
        export_segments(con, ["Champions", hostile], "csv", tmp_path / "x.csv")
    assert error.value.known == ["At Risk", "Champions", "Hibernating"]
    code = cli.main(
        [
            "export",
            "--segment",
            "Champs",
            "--format",
            "brevo",
            "--out",
            str(tmp_path / "y.csv"),
            "--warehouse",
            str(warehouse),
        ]
    )
    assert code == 2
    assert "Champions" in capsys.readouterr().err
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from core.customers").fetchone()[0] == 5
    assert not (tmp_path / "y.csv").exists()


def test_export_cli_writes_the_file(tmp_path, warehouse, capsys):
    out = tmp_path / "deep" / "champions.csv"
    code = cli.main(
        [
            "export",
            "--segment",
            "Champions",
            "At Risk",
            "--format",
            "esputnik",
            "--out",
            str(out),
            "--warehouse",
            str(warehouse),
        ]
    )
    assert code == 0
    assert "wrote 3 contacts" in capsys.readouterr().out and out.exists()
