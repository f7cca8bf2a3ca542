"""Reading raw files (SPEC §2): every file kind gives the same canonical events, and nothing read is lost.

Each test writes small raw files under `tmp_path/<source>/...`, then runs `discover_files` + `parse_files`.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.ingest import ParseResult
from pipelines.reading import RECORD_COLUMNS, RawFile, _split_lines, discover_files
from tests.helpers import parse, to_csv, write

KEY_COLUMNS = ["order_id", "status", "placed_at", "net_amount", "currency", "email", "items"]


# --- helpers --------------------------------------------------------------------------------------


def file_row(result: ParseResult, path: str) -> dict:
    rows = result.files.filter(pl.col("path") == path).to_dicts()
    assert len(rows) == 1, result.files
    return rows[0]


def key_values(result: ParseResult) -> list[dict]:
    return result.events.select(KEY_COLUMNS).to_dicts()


# --- one order per source, in the shapes of the seeds ---------------------------------------------

BREVO_ORDER = {
    "id": "B-100",
    "email": " Ana.Lima@Example.com ",
    "customerId": "C-1",
    "date": "2024-01-25T14:30:00Z",
    "status": "Completed",
    "billing": {"name": "Ana Lima", "city": "Roma", "phone": "+39 06 1234567"},
    "shipping": {"name": "Ana Lima", "cost": 4.9},
    "products": [
        {
            "id": "P-1",
            "name": "Tazza",
            "sku": "TZ-1",
            "quantity": 2,
            "price": 12.5,
            "category": ["Casa", "Cucina"],
        },
        {"id": "P-2", "name": "Tè verde", "quantity": 1, "price": 0.1, "category": ["Cibo"]},
    ],
    "financial": {
        "subtotal": 25.1,
        "shipping": 4.9,
        "tax": 1.0,
        "discount": 5,
        "total": 26.0,
        "currency": "EUR",
    },
    "metadata": {"source": "Website", "campaign": "Primavera"},
}

BONIFIQ_ORDER = {
    "OriginalId": "PED-1001",
    "OrderPlacementDate": "2024-03-05T11:45:00Z",
    "OrderCompletedDate": "2024-03-07T09:00:00Z",
    "OrderCancelledDate": None,
    "OrderStatus": "Faturado",
    "IsCompleted": True,
    "IsCancelledOrReturned": False,
    "OrderTotal": 120.0,
    "Customer": {"OriginalId": "maria@example.com.br", "Name": "Maria Silva", "Phone": "+55 11 98765-4321"},
    "Products": [
        {
            "OriginalId": "SKU-1",
            "Name": "Bolsa de Couro",
            "Quantity": 1,
            "Price": 100.0,
            "Category": "Luxury",
        },
        {"OriginalId": "SKU-2", "Name": "Sacola", "Quantity": 2, "Price": 10.0, "Category": "Eco-Friendly"},
    ],
    "Coupon": "BQ-REWARD-10",
    "PaymentMethod": "Visa Credit Card",
    "LastUpdate": "2024-03-07T09:00:00Z",
}

ESPUTNIK_ORDER = {
    "externalOrderId": "100500",
    "externalCustomerId": "12345",
    "totalCost": 1000,
    "status": "DELIVERED",
    "date": "2017-03-08T09:30:00+02:00",
    "email": "mail@example.com",
    "phone": "380942583691",
    "firstName": "John",
    "lastName": "Smith",
    "currency": "USD",
    "shipping": 10,
    "discount": 0,
    "deliveryAddress": "First str. 1",
    "items": [
        {
            "externalItemId": "200600",
            "name": "Super Device",
            "category": "devices",
            "quantity": 1,
            "cost": 990,
            "url": "http://example.com/item/200600",
            "imageUrl": "http://example.com/item/200600/image.png",
        }
    ],
}

ORDERS = {"brevo": BREVO_ORDER, "bonifiq": BONIFIQ_ORDER, "esputnik": ESPUTNIK_ORDER}
ITEM_COLUMNS = {"brevo": "products", "bonifiq": "Products", "esputnik": "items"}


def variants(source: str) -> dict[str, tuple[str, bytes]]:
    """File name and bytes of the same order in every file kind of SPEC §2."""
    order = ORDERS[source]
    pretty = json.dumps(order, indent=2, ensure_ascii=False)
    line = json.dumps(order, ensure_ascii=False)
    table = to_csv([order], ITEM_COLUMNS[source])
    plain = {
        "object.json": pretty,
        "array.json": json.dumps([order], indent=2, ensure_ascii=False),
        "envelope.json": json.dumps({"orders": [order]}, indent=2, ensure_ascii=False),
        "lines.ndjson": line + "\n",
        "lines.jsonl": line + "\n",
        "table.csv": table,
    }
    out = {name: (name, text.encode("utf-8")) for name, text in plain.items()}
    for name in ("object.json", "lines.ndjson", "table.csv", "envelope.json"):
        out[name + ".gz"] = (name + ".gz", gzip.compress(plain[name].encode("utf-8")))
    out["bom.json"] = ("bom.json", b"\xef\xbb\xbf" + pretty.encode("utf-8"))
    out["bom.ndjson"] = ("bom.ndjson", b"\xef\xbb\xbf" + (line + "\n").encode("utf-8"))
    out["bom.csv"] = ("bom.csv", b"\xef\xbb\xbf" + table.encode("utf-8"))
    out["crlf.ndjson"] = ("crlf.ndjson", (line + "\r\n").encode("utf-8"))
    out["crlf.csv"] = ("crlf.csv", table.replace("\n", "\r\n").encode("utf-8"))
    return out


# --- every file kind, same canonical values -------------------------------------------------------


@pytest.mark.parametrize("source", ["brevo", "bonifiq", "esputnik"])
def test_every_file_kind_gives_the_same_event(tmp_path: Path, source: str) -> None:
    reference_dir = tmp_path / "reference"
    write(reference_dir, f"{source}/order.json", json.dumps(ORDERS[source]))
    reference = parse(reference_dir)
    assert reference.quarantine.height == 0, reference.quarantine.to_dicts()
    expected = key_values(reference)
    assert len(expected) == 1
    assert expected[0]["items"] and len(expected[0]["items"]) == len(ORDERS[source][ITEM_COLUMNS[source]])

    for kind, (name, content) in variants(source).items():
        root = tmp_path / kind.replace(".", "_")
        write(root, f"{source}/{name}", content)
        result = parse(root)
        assert result.errors == [], (kind, result.errors)
        assert result.quarantine.height == 0, (kind, result.quarantine.to_dicts())
        assert file_row(result, f"{source}/{name}")["records_read"] == 1, kind
        assert key_values(result) == expected, kind


def test_reference_values_are_the_canonical_ones(tmp_path: Path) -> None:
    for source, order in ORDERS.items():
        write(tmp_path, f"{source}/order.json", json.dumps(order))
    result = parse(tmp_path)
    by_id = {row["order_id"]: row for row in key_values(result)}
    brevo = by_id["brevo:B-100"]
    assert brevo["status"] == "pending"
    assert brevo["placed_at"] == datetime(2024, 1, 25, 14, 30)
    assert brevo["net_amount"] == Decimal("20.10")  # financial.subtotal − financial.discount
    assert brevo["currency"] == "EUR"
    assert brevo["email"] == "ana.lima@example.com"
    assert [
        (i["product_id"], i["quantity"], i["unit_price"], i["line_amount"], i["categories"]) for i in brevo["items"]
    ] == [
        ("P-1", 2, Decimal("12.50"), Decimal("25.00"), ["Casa", "Cucina"]),
        ("P-2", 1, Decimal("0.10"), Decimal("0.10"), ["Cibo"]),
    ]
    bonifiq = by_id["bonifiq:PED-1001"]
    assert (bonifiq["status"], bonifiq["net_amount"], bonifiq["currency"], bonifiq["email"]) == (
        "delivered",
        Decimal("120.00"),
        "BRL",
        "maria@example.com.br",
    )
    esputnik = by_id["esputnik:100500"]
    assert (esputnik["status"], esputnik["net_amount"], esputnik["currency"]) == (
        "delivered",
        Decimal("990.00"),
        "USD",
    )


def test_csv_dotted_columns_nest_and_items_column_is_json(tmp_path: Path) -> None:
    text = to_csv([BREVO_ORDER], "products")
    header = text.splitlines()[0].split(",")
    assert "financial.subtotal" in header and "billing.city" in header and "products" in header
    write(tmp_path, "brevo/orders.csv", text)
    result = parse(tmp_path)
    event = result.events.to_dicts()[0]
    assert event["net_amount"] == Decimal("20.10")
    assert event["phone"] == "39061234567"
    assert event["campaign"] == "Primavera"
    assert len(event["items"]) == 2


def test_csv_rows_leaving_nested_columns_empty_are_not_given_empty_objects(tmp_path: Path) -> None:
    """A CSV mixing full orders and status updates: empty dotted columns are absent fields, not `{}`."""
    rows = [
        BREVO_ORDER,
        {"id": "B-100", "status": "Delivered", "delivery": {"date": "2024-01-28T16:30:00Z"}},
        {
            "id": "B-200",
            "email": "x@example.com",
            "date": "2024-01-26T10:00:00Z",
            "products": [{"id": "P-9", "name": "Libro", "quantity": 3, "price": 0.2}],
        },
    ]
    write(tmp_path, "brevo/mixed.csv", to_csv(rows, "products"))
    result = parse(tmp_path)
    assert result.quarantine.height == 0, result.quarantine.to_dicts()
    events = result.events.select("order_id", "record_kind", "status", "delivered_at", "net_amount").to_dicts()
    assert events == [
        {
            "order_id": "brevo:B-100",
            "record_kind": "order",
            "status": "pending",
            "delivered_at": None,
            "net_amount": Decimal("20.10"),
        },
        {
            "order_id": "brevo:B-100",
            "record_kind": "update",
            "status": "delivered",
            "delivered_at": datetime(2024, 1, 28, 16, 30),
            "net_amount": None,
        },
        # no financial block: Σ price × quantity of the products
        {
            "order_id": "brevo:B-200",
            "record_kind": "order",
            "status": "pending",
            "delivered_at": None,
            "net_amount": Decimal("0.60"),
        },
    ]


# --- processing order -----------------------------------------------------------------------------


def test_files_are_processed_in_lexicographic_path_order_within_a_source(tmp_path: Path) -> None:
    names = ["b/2.ndjson", "a.ndjson", "a/z.json", "10.json", "9.json", "B.json"]
    for n, name in enumerate(names):
        order = dict(ESPUTNIK_ORDER, externalOrderId=f"O-{n}")
        content = json.dumps(order) + ("\n" if name.endswith("ndjson") else "")
        write(tmp_path, f"esputnik/{name}", content)
    write(tmp_path, "brevo/z.json", json.dumps(BREVO_ORDER))
    files, warnings = discover_files(tmp_path)
    assert warnings == []
    expected = sorted(f"esputnik/{n}" for n in names)
    assert [f.rel_path for f in files if f.source == "esputnik"] == expected
    result = parse(tmp_path)
    paths = result.files.filter(pl.col("source") == "esputnik")["path"].to_list()
    assert paths == expected
    esputnik_events = result.events.filter(pl.col("source") == "esputnik")
    assert esputnik_events["source_file"].to_list() == expected
    assert esputnik_events["source_order_id"].to_list() == [f"O-{names.index(p.split('/', 1)[1])}" for p in expected]


def test_records_keep_file_order_inside_a_file(tmp_path: Path) -> None:
    lines = [json.dumps(dict(ESPUTNIK_ORDER, externalOrderId=f"O-{n}")) for n in (3, 1, 2)]
    write(tmp_path, "esputnik/orders.ndjson", "\n".join(lines) + "\n")
    result = parse(tmp_path)
    assert result.events["source_order_id"].to_list() == ["O-3", "O-1", "O-2"]
    assert result.events["record_locator"].to_list() == ["line 1", "line 2", "line 3"]


# --- records that cannot be parsed ----------------------------------------------------------------


def test_truncated_json_array_keeps_complete_elements_and_quarantines_the_rest(tmp_path: Path) -> None:
    first = json.dumps(dict(ESPUTNIK_ORDER, externalOrderId="A"), indent=2)
    second = json.dumps(dict(ESPUTNIK_ORDER, externalOrderId="B"), indent=2)
    third = json.dumps(dict(ESPUTNIK_ORDER, externalOrderId="C"), indent=2)
    cut = third[: len(third) // 2]
    text = "[\n" + first + ",\n" + second + ",\n" + cut
    write(tmp_path, "esputnik/cut.json", text)
    result = parse(tmp_path)
    assert result.events["source_order_id"].to_list() == ["A", "B"]
    assert result.events["record_locator"].to_list() == ["index 0", "index 1"]
    q = result.quarantine.to_dicts()
    assert len(q) == 1
    assert q[0]["reason_code"] == "malformed_json"
    assert q[0]["raw_record"] == cut  # the rest of the file, verbatim: nothing lost
    assert q[0]["record_locator"].startswith("index 2")
    row = file_row(result, "esputnik/cut.json")
    assert (row["records_read"], row["records_accepted"], row["records_quarantined"]) == (3, 2, 1)


def test_truncated_envelope_keeps_complete_orders(tmp_path: Path) -> None:
    first = json.dumps(dict(ESPUTNIK_ORDER, externalOrderId="A"))
    second = json.dumps(dict(ESPUTNIK_ORDER, externalOrderId="B"))
    text = '{"orders": [' + first + ", " + second[:40]
    write(tmp_path, "esputnik/cut.json", text)
    result = parse(tmp_path)
    assert result.events["source_order_id"].to_list() == ["A"]
    assert result.quarantine["raw_record"].to_list() == [second[:40]]
    assert result.quarantine["reason_code"].to_list() == ["malformed_json"]


@pytest.mark.parametrize("envelope", [False, True])
def test_text_after_the_json_document_is_quarantined_not_dropped(tmp_path: Path, envelope: bool) -> None:
    """Two exports appended in one .json file: the second is kept (quarantined whole), never lost."""
    first = [dict(ESPUTNIK_ORDER, externalOrderId="A")]
    second = [dict(ESPUTNIK_ORDER, externalOrderId="B")]
    doc = (lambda orders: json.dumps({"orders": orders})) if envelope else json.dumps
    write(tmp_path, "esputnik/two.json", doc(first) + "\n" + doc(second) + "\n")
    result = parse(tmp_path)
    assert result.events["source_order_id"].to_list() == ["A"]
    q = result.quarantine.to_dicts()
    assert [(r["reason_code"], r["raw_record"]) for r in q] == [("malformed_json", doc(second) + "\n")]
    assert file_row(result, "esputnik/two.json")["records_read"] == 2


def test_single_object_with_text_after_it_is_one_malformed_record(tmp_path: Path) -> None:
    text = json.dumps(ESPUTNIK_ORDER) + "\n" + json.dumps(ESPUTNIK_ORDER) + "\n"
    write(tmp_path, "esputnik/two.json", text)
    result = parse(tmp_path)
    assert result.events.height == 0
    assert result.quarantine.select("record_locator", "reason_code", "raw_record").rows() == [
        ("object", "malformed_json", text)
    ]


def test_empty_json_files_hold_no_records(tmp_path: Path) -> None:
    write(tmp_path, "esputnik/a.json", "")
    write(tmp_path, "esputnik/b.json", " [ ] ")
    write(tmp_path, "esputnik/c.json", '{"orders": []}')
    write(tmp_path, "esputnik/d.ndjson", "\n\n")
    write(tmp_path, "esputnik/e.csv", "")
    result = parse(tmp_path)
    assert result.errors == []
    assert result.files["records_read"].to_list() == [0, 0, 0, 0, 0]


def test_array_elements_keep_their_text_verbatim(tmp_path: Path) -> None:
    element = json.dumps(dict(ESPUTNIK_ORDER, externalOrderId="X", email=None, phone=None), indent=4)
    text = "[  " + json.dumps(ESPUTNIK_ORDER) + " ,\n\t" + element + "\n]\n"
    write(tmp_path, "esputnik/a.json", text)
    result = parse(tmp_path)
    assert result.events.height == 1
    q = result.quarantine.to_dicts()
    assert [(r["record_locator"], r["reason_code"]) for r in q] == [("index 1", "missing_contact")]
    assert q[0]["raw_record"] == element


def test_csv_row_with_wrong_number_of_fields_is_malformed(tmp_path: Path) -> None:
    table = to_csv([ESPUTNIK_ORDER, dict(ESPUTNIK_ORDER, externalOrderId="200")], "items")
    lines = table.splitlines()
    bad = lines[1] + ",extra"
    text = "\n".join([lines[0], bad, lines[2]]) + "\n"
    write(tmp_path, "esputnik/t.csv", text)
    result = parse(tmp_path)
    assert result.events["source_order_id"].to_list() == ["200"]
    assert result.events["record_locator"].to_list() == ["line 3"]
    q = result.quarantine.to_dicts()
    assert [(r["record_locator"], r["reason_code"], r["raw_record"]) for r in q] == [("line 2", "malformed_json", bad)]
    assert "field" in q[0]["reason"]


def test_csv_row_with_quoted_newline_keeps_its_raw_text(tmp_path: Path) -> None:
    order = dict(ESPUTNIK_ORDER, deliveryAddress="First str. 1\nFlat 2")
    table = to_csv([order, dict(ESPUTNIK_ORDER, externalOrderId="200", totalCost="ten")], "items")
    write(tmp_path, "esputnik/t.csv", table)
    result = parse(tmp_path)
    assert result.events["source_order_id"].to_list() == ["100500"]
    q = result.quarantine.to_dicts()
    assert len(q) == 1
    assert q[0]["record_locator"] == "line 4"  # the first row spans lines 2–3
    assert q[0]["raw_record"] == table.splitlines()[3]
    assert q[0]["reason_code"] == "invalid_type"


def test_csv_row_with_unicode_line_separator_in_a_field(tmp_path: Path) -> None:
    """U+2028 / U+0085 are not CSV line ends: the rows after one keep their own raw text and line number."""
    order = dict(ESPUTNIK_ORDER, deliveryAddress="Via Roma\u2028scala B\x85int. 4")
    table = to_csv([order, dict(ESPUTNIK_ORDER, externalOrderId="200", status="LOST")], "items")
    write(tmp_path, "esputnik/t.csv", table)
    result = parse(tmp_path)
    assert result.events["source_order_id"].to_list() == ["100500"]
    q = result.quarantine.to_dicts()
    assert [(r["record_locator"], r["reason_code"]) for r in q] == [("line 3", "unknown_status")]
    assert q[0]["raw_record"] == table.split("\n")[2]


def test_ndjson_blank_lines_are_not_records(tmp_path: Path) -> None:
    one = json.dumps(dict(ESPUTNIK_ORDER, externalOrderId="1"))
    two = json.dumps(dict(ESPUTNIK_ORDER, externalOrderId="2"))
    write(tmp_path, "esputnik/o.ndjson", "\n" + one + "\n\n   \n\t\n" + two + "\n\n")
    result = parse(tmp_path)
    assert result.quarantine.height == 0
    assert result.events["record_locator"].to_list() == ["line 2", "line 6"]
    assert file_row(result, "esputnik/o.ndjson")["records_read"] == 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["{}", "x", " ", "\t", "\r", "\n", "\r\n", "\x1c", "\x85", "\u2028", "\u3000"])))
def test_ndjson_lines_split_as_python_splits_them(pieces: list[str]) -> None:
    """The lines split in Polars are those of Python's `split('\\n')`, one CR at the end dropped, and blank
    (by str.strip, which also strips \\x1c-\\x1f) lines left out; numbered from 1 in the file."""
    text = "".join(pieces)
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    expected = [(f"line {n}", line) for n, line in enumerate(lines, start=1) if line.strip()]
    file = RawFile(path=Path("/x/o.ndjson"), rel_path="esputnik/o.ndjson", source="esputnik", sha256="0", size_bytes=0)
    frame = _split_lines(file, text)
    assert list(zip(frame["record_locator"], frame["raw_record"], strict=True)) == expected
    assert frame["json_text"].to_list() == frame["raw_record"].to_list()
    assert frame["record_index"].to_list() == list(range(len(expected)))
    assert frame.schema == pl.Schema(RECORD_COLUMNS)


def test_ndjson_line_with_unicode_line_separator_inside_a_string(tmp_path: Path) -> None:
    """JSON allows a raw U+2028 / U+2029 / U+0085 inside a string: the line is still one record."""
    one = json.dumps(
        dict(ESPUTNIK_ORDER, externalOrderId="1", deliveryAddress="a\u2028b\u2029c\x85d"), ensure_ascii=False
    )
    two = json.dumps(dict(ESPUTNIK_ORDER, externalOrderId="2"))
    write(tmp_path, "esputnik/o.ndjson", one + "\n" + two + "\n")
    result = parse(tmp_path)
    assert result.quarantine.height == 0, result.quarantine.to_dicts()
    assert result.events["source_order_id"].to_list() == ["1", "2"]
    assert result.events["record_locator"].to_list() == ["line 1", "line 2"]


def test_ndjson_malformed_line_is_quarantined_verbatim(tmp_path: Path) -> None:
    good = json.dumps(ESPUTNIK_ORDER)
    bad = '  {"externalOrderId": "9", "totalCost": 10,,}  '
    write(tmp_path, "esputnik/o.ndjson", good + "\r\n" + bad + "\r\n")
    result = parse(tmp_path)
    q = result.quarantine.to_dicts()
    assert [(r["record_locator"], r["reason_code"], r["raw_record"]) for r in q] == [("line 2", "malformed_json", bad)]


def test_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    write(tmp_path, "esputnik/a.json", bom + json.dumps(dict(ESPUTNIK_ORDER, externalOrderId="1")).encode())
    write(
        tmp_path,
        "esputnik/b.ndjson",
        bom + (json.dumps(dict(ESPUTNIK_ORDER, externalOrderId="2")) + "\n").encode(),
    )
    write(
        tmp_path,
        "esputnik/c.csv",
        bom + to_csv([dict(ESPUTNIK_ORDER, externalOrderId="3")], "items").encode(),
    )
    write(
        tmp_path,
        "esputnik/d.csv.gz",
        gzip.compress(bom + to_csv([dict(ESPUTNIK_ORDER, externalOrderId="4")], "items").encode()),
    )
    result = parse(tmp_path)
    assert result.errors == []
    assert result.quarantine.height == 0, result.quarantine.to_dicts()
    assert result.events["source_order_id"].to_list() == ["1", "2", "3", "4"]


# --- files that cannot be read at all -------------------------------------------------------------


def test_unreadable_files_are_reported_and_do_not_stop_the_others(tmp_path: Path) -> None:
    good = json.dumps(ESPUTNIK_ORDER)
    compressed = gzip.compress((good + "\n").encode())
    corrupt = bytearray(compressed)
    for i in range(12, len(corrupt) - 8):  # scramble the deflate stream, keep the gzip header
        corrupt[i] ^= 0x5A
    write(tmp_path, "esputnik/1_not_gzip.ndjson.gz", good + "\n")
    write(tmp_path, "esputnik/2_truncated.ndjson.gz", compressed[: len(compressed) // 2])
    write(tmp_path, "esputnik/3_corrupt.ndjson.gz", bytes(corrupt))
    write(
        tmp_path,
        "esputnik/4_latin1.json",
        json.dumps(dict(ESPUTNIK_ORDER, firstName="José"), ensure_ascii=False).encode("latin-1"),
    )
    write(tmp_path, "esputnik/5_good.ndjson", good + "\n")
    write(tmp_path, "brevo/6_good.json", json.dumps(BREVO_ORDER))
    result = parse(tmp_path)
    bad_paths = [
        "esputnik/1_not_gzip.ndjson.gz",
        "esputnik/2_truncated.ndjson.gz",
        "esputnik/3_corrupt.ndjson.gz",
        "esputnik/4_latin1.json",
    ]
    assert len(result.errors) == 4, result.errors
    for path, error in zip(bad_paths, result.errors, strict=True):
        assert path in error
        row = file_row(result, path)
        assert row["error"] == error
        assert (row["records_read"], row["records_accepted"], row["records_quarantined"]) == (0, 0, 0)
    assert "UTF-8" in file_row(result, "esputnik/4_latin1.json")["error"]
    assert file_row(result, "esputnik/5_good.ndjson")["error"] is None
    assert sorted(result.events["order_id"].to_list()) == ["brevo:B-100", "esputnik:100500"]


def test_symlink_outside_the_raw_directory_is_skipped_with_a_warning(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    outside = write(tmp_path, "elsewhere/secret.json", json.dumps(ESPUTNIK_ORDER))
    write(raw, "esputnik/a.json", json.dumps(dict(ESPUTNIK_ORDER, externalOrderId="inside")))
    (raw / "esputnik" / "b.json").symlink_to(outside)
    (raw / "esputnik" / "dir").symlink_to(outside.parent, target_is_directory=True)
    files, warnings = discover_files(raw)
    assert [f.rel_path for f in files] == ["esputnik/a.json"]
    assert [w.split(":")[0] for w in warnings] == ["esputnik/dir", "esputnik/b.json"]
    assert all("outside" in w for w in warnings)
    result = parse(raw)
    assert result.events["source_order_id"].to_list() == ["inside"]


def test_files_that_are_not_raw_exports_are_not_read(tmp_path: Path) -> None:
    write(tmp_path, "esputnik/a.json", json.dumps(ESPUTNIK_ORDER))
    write(tmp_path, "esputnik/notes.txt", "not an export")
    write(tmp_path, "esputnik/.hidden.json", json.dumps(ESPUTNIK_ORDER))
    write(tmp_path, "other/a.json", json.dumps(ESPUTNIK_ORDER))
    files, _ = discover_files(tmp_path)
    assert [f.rel_path for f in files] == ["esputnik/a.json"]


# --- values ---------------------------------------------------------------------------------------


def test_esputnik_offset_dates_are_stored_in_utc(tmp_path: Path) -> None:
    orders = [
        dict(ESPUTNIK_ORDER, externalOrderId="1", status="INITIALIZED", date="2017-03-08T09:30:00+02:00"),
        dict(ESPUTNIK_ORDER, externalOrderId="1", status="DELIVERED", date="2017-03-09T23:15:00-05:00"),
        dict(ESPUTNIK_ORDER, externalOrderId="2", status="CANCELLED", date="2017-03-08T09:30:00Z"),
    ]
    write(tmp_path, "esputnik/o.json", json.dumps({"orders": orders}))
    result = parse(tmp_path)
    rows = result.events.select("placed_at", "delivered_at", "cancelled_at", "updated_at").to_dicts()
    assert rows[0]["placed_at"] == datetime(2017, 3, 8, 7, 30)
    assert rows[1]["delivered_at"] == datetime(2017, 3, 10, 4, 15)
    assert rows[2]["cancelled_at"] == datetime(2017, 3, 8, 9, 30)
    assert result.events.schema["placed_at"] == pl.Datetime("us")


def test_money_is_exact_decimal(tmp_path: Path) -> None:
    brevo = {
        "id": "M-1",
        "email": "m@example.com",
        "date": "2024-01-25T14:30:00Z",
        "products": [
            {"id": "a", "name": "a", "quantity": 1, "price": 0.1},
            {"id": "b", "name": "b", "quantity": 1, "price": 0.2},
            {"id": "c", "name": "c", "quantity": 3, "price": 0.1},
        ],
    }
    revenue_only = {
        "id": "M-2",
        "email": "m@example.com",
        "date": "2024-01-25T14:30:00Z",
        "revenue": 0.3,
        "shipping": {"cost": 0.1},
    }
    point_three = {  # 0.1 + 0.2 == 0.30000000000000004 in binary floats: never here
        "id": "M-4",
        "email": "m@example.com",
        "date": "2024-01-25T14:30:00Z",
        "products": [{"id": "a", "quantity": 1, "price": 0.1}, {"id": "b", "quantity": 1, "price": 0.2}],
    }
    write(
        tmp_path,
        "brevo/m.ndjson",
        "\n".join(json.dumps(r) for r in (brevo, revenue_only, point_three)) + "\n",
    )
    write(tmp_path, "brevo/m.csv", to_csv([dict(brevo, id="M-3")], "products"))
    esputnik = dict(
        ESPUTNIK_ORDER,
        totalCost=0.3,
        shipping=0.1,
        items=[dict(ESPUTNIK_ORDER["items"][0], cost=0.1, quantity=3)],
    )
    write(tmp_path, "esputnik/m.json", json.dumps(esputnik))
    bonifiq = dict(BONIFIQ_ORDER, OrderTotal=0.3, Products=[dict(BONIFIQ_ORDER["Products"][0], Price=0.1, Quantity=3)])
    write(tmp_path, "bonifiq/m.json", json.dumps(bonifiq))
    result = parse(tmp_path)
    assert result.quarantine.height == 0, result.quarantine.to_dicts()
    nets = dict(zip(result.events["order_id"], result.events["net_amount"], strict=True))
    assert nets == {
        "brevo:M-1": Decimal("0.60"),
        "brevo:M-2": Decimal("0.20"),
        "brevo:M-3": Decimal("0.60"),
        "brevo:M-4": Decimal("0.30"),
        "esputnik:100500": Decimal("0.20"),
        "bonifiq:PED-1001": Decimal("0.30"),
    }
    assert all(isinstance(v, Decimal) for v in nets.values())
    assert result.events.schema["net_amount"] == pl.Decimal(18, 2)
    lines = result.events.filter(pl.col("order_id") == "brevo:M-1")["items"].to_list()[0]
    assert [i["line_amount"] for i in lines] == [Decimal("0.10"), Decimal("0.20"), Decimal("0.30")]
    assert sum(i["line_amount"] for i in lines) == Decimal("0.60")
    assert str(nets["brevo:M-4"]) == "0.30"


# The fast path (orjson) and the exact check (stdlib, with the reason) must agree on every record.
STRICT_CASES = [
    '{"a":1}',
    '{"a":1,"a":2}',
    '{"a":{"b":1,"b":1}}',
    '{"k":"x\\":y","k2":"\\\\"}',
    '{"k\\"":1,"k\\"":2}',
    '{"a":[{"x":1},{"x":1,"x":2}]}',
    '{"a":"\\ud800"}',
    '{"a":1e400}',
    '{"a":12345678901234567890123456789}',
    '{"a": "b:c", "c": ":::"}',
    '{"a":NaN}',
    '{"a":1,}',
    '{"é":"ü","é":1}',
    '{"a":"\\u003a:","a":"x\\u003a"}',
    '{"a":1,"\\u0061":2}',
    '{"a":"x:y","a":"z"}',
    '{"a":' + "[" * 300 + "]" * 300 + "}",
]


def test_the_strict_fast_path_agrees_with_the_exact_check() -> None:
    from pipelines.reading import _strict, strict_json_error

    frame = pl.DataFrame(
        {"json_text": STRICT_CASES, "parse_error": [None] * len(STRICT_CASES)},
        schema={"json_text": pl.String, "parse_error": pl.String},
    )
    got = _strict(frame)["parse_error"].to_list()
    expected = [strict_json_error(text) for text in STRICT_CASES]
    assert got == expected
    assert sum(e is not None for e in expected) == 11
