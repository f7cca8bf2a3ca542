"""Hostile and broken raw files (issue #7): every case ends in a defined outcome, never an exception.

A bad record is quarantined with a SPEC §4 reason and its raw text; a file that cannot be read as text at all
(not gzip, not UTF-8) is a file-level error in `core.ingest_files`; harmless variations (a BOM, CRLF, unknown
fields, extra CSV columns, empty files) are read as if they were not there. In every case the other files of
the run are read (a control file sits beside the hostile one) and conservation holds per file (`parse`).
"""

from __future__ import annotations

import copy
import gzip
import json
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from pipelines.canonical import build_canonical
from pipelines.ingest import ParseResult
from pipelines.reading import ITEM_COLUMNS, MAX_DEPTH
from tests.helpers import default_rules, parse, seed_records, to_csv, write

SOURCES = ("brevo", "bonifiq", "esputnik")
KINDS = ("json", "ndjson", "csv", "json.gz", "ndjson.gz", "csv.gz")
ID_FIELD = {"brevo": "id", "bonifiq": "OriginalId", "esputnik": "externalOrderId"}
CONTROL = "esputnik/zz_control.ndjson"


def order(source: str, order_id: str = "X-1") -> dict:
    """A full, valid order in the seed's own shape (Brevo: the loyalty order; BonifiQ: the completed order)."""
    seed = {"brevo": seed_records("brevo")[1], "bonifiq": seed_records("bonifiq")[0]}.get(source)
    record = copy.deepcopy(seed or seed_records(source)[0])
    record[ID_FIELD[source]] = order_id
    return record


def items_of(record: dict, source: str) -> list[dict]:
    return record[ITEM_COLUMNS[source]]


def text_of(kind: str, source: str, records: list[dict | str]) -> str:
    """The records as one file of `kind` (a record given as text is written as it is: JSON kinds only)."""
    base = kind.removesuffix(".gz")
    if base == "csv":
        return to_csv(records, ITEM_COLUMNS[source])  # type: ignore[arg-type]
    texts = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    if base == "ndjson":
        return "".join(t + "\n" for t in texts)
    return "[" + ",\n".join(texts) + "]\n"


def as_bytes(kind: str, content: str | bytes) -> bytes:
    data = content.encode("utf-8") if isinstance(content, str) else content
    return gzip.compress(data) if kind.endswith(".gz") else data


def locator(kind: str, index: int) -> str:
    """The locator of the `index`-th record of a file written by `text_of` (no multi-line CSV fields)."""
    base = kind.removesuffix(".gz")
    return {"json": f"index {index}", "ndjson": f"line {index + 1}", "csv": f"line {index + 2}"}[base]


def run(tmp_path: Path, files: dict[str, str | bytes]) -> ParseResult:
    """Parse `files` beside a good control file: the control is read whatever the hostile files hold."""
    root = tmp_path / "raw"
    for rel, content in files.items():
        write(root, rel, content)
    write(root, CONTROL, json.dumps(order("esputnik", "CONTROL")) + "\n")
    result = parse(root)  # asserts conservation per file
    assert counts(result, CONTROL) == (1, 1, 0)
    assert "esputnik:CONTROL" in result.events["order_id"].to_list()
    return result


def file_row(result: ParseResult, path: str) -> dict:
    rows = result.files.filter(pl.col("path") == path).to_dicts()
    assert len(rows) == 1, result.files
    return rows[0]


def counts(result: ParseResult, path: str) -> tuple[int, int, int]:
    row = file_row(result, path)
    return row["records_read"], row["records_accepted"], row["records_quarantined"]


def quarantined(result: ParseResult, path: str) -> dict[str, dict]:
    rows = result.quarantine.filter(pl.col("source_file") == path).to_dicts()
    return {row["record_locator"]: row for row in rows}


def accepted_ids(result: ParseResult, path: str) -> list[str]:
    return result.events.filter(pl.col("source_file") == path)["source_order_id"].to_list()


# --- truncated files ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_file_cut_mid_record_keeps_the_whole_records_and_quarantines_the_cut_one(tmp_path: Path, kind: str) -> None:
    files, cut_texts = {}, {}
    for source in SOURCES:
        records = [order(source, "A"), order(source, "B"), order(source, "C")]
        text = text_of(kind, source, records)
        last = text_of(kind, source, records[2:]).splitlines()[-1 if kind.startswith("csv") else 0]
        last = last.removeprefix("[").removesuffix("]")
        start = text.rindex(last)
        cut = text[: start + len(last) // 2]
        cut_texts[source] = cut[start:]
        files[f"{source}/cut.{kind}"] = as_bytes(kind, cut)
    result = run(tmp_path, files)
    for source in SOURCES:
        path = f"{source}/cut.{kind}"
        assert counts(result, path) == (3, 2, 1), source
        assert accepted_ids(result, path) == ["A", "B"]
        (row,) = quarantined(result, path).values()
        assert row["reason_code"] == "malformed_json", row
        assert row["raw_record"] == cut_texts[source]  # the cut record verbatim, nothing lost
        assert row["record_locator"].startswith(locator(kind, 2))


@pytest.mark.parametrize("keep", ["half", "no trailer"])
def test_truncated_gzip_is_a_file_error_and_the_run_goes_on(tmp_path: Path, keep: str) -> None:
    files = {}
    for kind in ("json.gz", "ndjson.gz", "csv.gz"):
        data = as_bytes(kind, text_of(kind, "esputnik", [order("esputnik", "A"), order("esputnik", "B")]))
        files[f"esputnik/cut.{kind}"] = data[: len(data) // 2] if keep == "half" else data[:-8]
    result = run(tmp_path, files)
    assert len(result.errors) == 3
    for path in files:
        row = file_row(result, path)
        assert path in row["error"] and "cannot read" in row["error"], row
        assert counts(result, path) == (0, 0, 0)


# --- encodings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_utf8_bom_is_read_as_if_absent(tmp_path: Path, kind: str) -> None:
    files = {}
    for source in SOURCES:
        text = text_of(kind, source, [order(source, "A"), order(source, "B")])
        files[f"{source}/bom.{kind}"] = as_bytes(kind, b"\xef\xbb\xbf" + text.encode("utf-8"))
        files[f"{source}/plain.{kind}"] = as_bytes(kind, text)
    result = run(tmp_path, files)
    assert result.errors == [] and result.quarantine.height == 0, result.quarantine.to_dicts()
    columns = ["order_id", "status", "placed_at", "net_amount", "currency", "email", "items"]
    for source in SOURCES:
        bom = result.events.filter(pl.col("source_file") == f"{source}/bom.{kind}").select(columns)
        plain = result.events.filter(pl.col("source_file") == f"{source}/plain.{kind}").select(columns)
        assert bom.height == 2 and bom.equals(plain), source


@pytest.mark.parametrize(
    "bad_bytes",
    [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf"],
    ids=["invalid byte", "broken sequence", "encoded surrogate", "overlong"],
)
def test_invalid_utf8_is_a_file_error_and_the_run_goes_on(tmp_path: Path, bad_bytes: bytes) -> None:
    files = {}
    for kind in KINDS:
        record = order("esputnik", "A")
        record["firstName"] = "@@BAD@@"
        text = text_of(kind, "esputnik", [order("esputnik", "OK"), record]).encode("utf-8")
        files[f"esputnik/bad.{kind}"] = as_bytes(kind, text.replace(b"@@BAD@@", b"Jo" + bad_bytes + b"hn"))
    result = run(tmp_path, files)
    assert len(result.errors) == len(KINDS)
    for path in files:
        row = file_row(result, path)
        assert "not UTF-8" in row["error"] and path in row["error"], row
        assert counts(result, path) == (0, 0, 0)


# --- numbers that are not amounts -----------------------------------------------------------------

# (source, where the value goes, field): an order amount, an item price, an item quantity
NUMBER_FIELDS = {
    "brevo": [("order", "financial.subtotal"), ("item", "price"), ("item", "quantity")],
    "bonifiq": [("order", "OrderTotal"), ("item", "Price"), ("item", "Quantity")],
    "esputnik": [("order", "totalCost"), ("item", "cost"), ("item", "quantity")],
}
NON_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "12345678901234567890", '"NaN"']


def expected_code(kind: str, where: str, field: str, value: str) -> str:
    """NaN / Infinity are not JSON: the record does not parse. In a CSV cell they are text, not a number.
    1e400 overflows and a 20-digit amount does not fit DECIMAL(18,2): wrong type; a 20-digit count is not a
    quantity of goods."""
    in_json = kind != "csv" or where == "item"  # CSV items are a JSON column; CSV order fields are cells
    if value in ("NaN", "Infinity", "-Infinity") and in_json:
        return "malformed_json"
    if value == "12345678901234567890" and field.lower() == "quantity":
        return "invalid_quantity"
    return "invalid_type"


def with_placeholder(source: str, n: int, where: str, field: str) -> dict:
    record = order(source, f"B{n}")
    target = items_of(record, source)[0] if where == "item" else record
    if "." in field:
        outer, field = field.split(".")
        target = target[outer]
    target[field] = f"@@V{n}@@"
    return record


def put_literal(text: str, n: int, literal: str) -> str:
    """Replace placeholder n by `literal` as written in a JSON text, in a CSV JSON cell, or as a plain CSV cell."""
    text = text.replace(f'""@@V{n}@@""', literal.replace('"', '""'))
    text = text.replace(f'"@@V{n}@@"', literal)
    return text.replace(f"@@V{n}@@", literal.strip('"'))


@pytest.mark.parametrize("kind", ["json", "ndjson", "csv", "ndjson.gz"])
def test_non_finite_and_huge_numbers_in_money_and_quantity_are_rejected(tmp_path: Path, kind: str) -> None:
    files, expected = {}, {}
    for source in SOURCES:
        records, literals, codes = [order(source, "GOOD")], {}, {}
        for where, field in NUMBER_FIELDS[source]:
            for value in NON_NUMBERS:
                n = len(records)
                records.append(with_placeholder(source, n, where, field))
                literals[n] = value
                codes[locator(kind, n)] = (field, value, expected_code(kind, where, field, value))
        text = text_of(kind, source, records)
        for n, value in literals.items():
            text = put_literal(text, n, value)
        files[f"{source}/numbers.{kind}"] = as_bytes(kind, text)
        expected[source] = codes
    result = run(tmp_path, files)
    for source in SOURCES:
        path = f"{source}/numbers.{kind}"
        assert accepted_ids(result, path) == ["GOOD"]
        rows = quarantined(result, path)
        got = {loc: (field, value, rows[loc]["reason_code"]) for loc, (field, value, _) in expected[source].items()}
        assert got == expected[source]
        for loc, (field, _, code) in expected[source].items():
            if code != "malformed_json":  # the reason names the field
                assert field.split(".")[-1].lower() in rows[loc]["reason"].lower(), rows[loc]["reason"]


# --- nesting --------------------------------------------------------------------------------------


def deep(levels: int) -> object:
    value: object = 1
    for n in range(levels):
        value = [value] if n % 2 else {"x": value}
    return value


@pytest.mark.parametrize("kind", ["json", "ndjson", "csv", "ndjson.gz"])
def test_deeply_nested_json_is_malformed_and_shallow_nesting_is_fine(tmp_path: Path, kind: str) -> None:
    deep_text = '{"x":' * 5_000 + "[" * 5_000 + "1" + "]" * 5_000 + "}" * 5_000  # 10,000 levels
    files = {}
    for source in SOURCES:
        too_deep, nested = order(source, "DEEP"), order(source, "NESTED")
        items_of(too_deep, source)[0]["extra"] = "@@DEEP@@"  # in an item: in CSV, inside the JSON item column
        items_of(nested, source)[0]["extra"] = deep(MAX_DEPTH - 10)
        text = text_of(kind, source, [order(source, "A"), too_deep, nested])
        text = text.replace('""@@DEEP@@""', deep_text.replace('"', '""')).replace('"@@DEEP@@"', deep_text)
        files[f"{source}/deep.{kind}"] = as_bytes(kind, text)
    result = run(tmp_path, files)
    for source in SOURCES:
        path = f"{source}/deep.{kind}"
        assert accepted_ids(result, path) == ["A", "NESTED"]
        (row,) = quarantined(result, path).values()
        assert (row["record_locator"], row["reason_code"]) == (locator(kind, 1), "malformed_json")
        assert "nested deeper" in row["reason"]


@pytest.mark.parametrize("shape", ["array", "object", "array in an array"])
def test_a_deeply_nested_json_file_is_one_malformed_record(tmp_path: Path, shape: str) -> None:
    levels = 10_000
    text = {
        "array": "[" * levels + "]" * levels,
        "object": '{"orders":' * levels + "[]" + "}" * levels,
        "array in an array": "[" + json.dumps(order("esputnik", "A")) + ", " + "[" * levels + "]" * levels + "]",
    }[shape]
    result = run(tmp_path, {"esputnik/deep.json": text})
    rows = quarantined(result, "esputnik/deep.json")
    assert [r["reason_code"] for r in rows.values()] == ["malformed_json"]
    assert accepted_ids(result, "esputnik/deep.json") == (["A"] if shape == "array in an array" else [])


# --- size -----------------------------------------------------------------------------------------


def test_a_100_mb_single_line_json_file_is_read_in_reasonable_time(tmp_path: Path) -> None:
    """One line, 100 MB: an order carrying 100 MB of unknown data, then 2,000 ordinary orders."""
    padded = order("esputnik", "BIG")
    padded["notes"] = ["n" * 1_000] * 100_000
    others = ",".join(json.dumps(order("esputnik", f"O-{n}"), separators=(",", ":")) for n in range(2_000))
    text = "[" + json.dumps(padded, separators=(",", ":")) + "," + others + "]"
    assert len(text) > 100_000_000 and "\n" not in text
    started = time.monotonic()
    result = run(tmp_path, {"esputnik/big.json": text})
    elapsed = time.monotonic() - started
    assert counts(result, "esputnik/big.json") == (2_001, 2_001, 0)
    assert accepted_ids(result, "esputnik/big.json")[:2] == ["BIG", "O-0"]
    assert elapsed < 60, f"a 100 MB line took {elapsed:.0f} s"


# --- timestamps -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["json", "ndjson", "csv"])
def test_timestamps_without_an_offset(tmp_path: Path, kind: str) -> None:
    """Brevo (`date` in UTC 'Z') and eSputnik (`date` with an offset) require the offset: invalid_timestamp.
    BonifiQ sends its dates in UTC by contract (SPEC §2.2: "OrderPlacementDate (UTC)"): a date without an
    offset is read as UTC, and one with an offset is converted to UTC."""
    brevo_naive = order("brevo", "NAIVE")
    brevo_naive["date"] = "2024-01-25T14:30:00"
    brevo_update = {"id": "OK", "status": "Delivered", "delivery": {"date": "2024-01-28 16:30:00"}}
    esputnik_naive = order("esputnik", "NAIVE")
    esputnik_naive["date"] = "2017-03-08T09:30:00"
    bonifiq_naive = order("bonifiq", "NAIVE")
    bonifiq_naive.update(OrderPlacementDate="2024-03-05T11:45:00", OrderCompletedDate="2024-03-07 09:00:00")
    bonifiq_naive["LastUpdate"] = "2024-03-07T09:00:00.000"
    bonifiq_offset = order("bonifiq", "OFFSET")
    bonifiq_offset.update(OrderPlacementDate="2024-03-05T08:45:00-03:00")
    files = {
        f"brevo/dates.{kind}": text_of(kind, "brevo", [order("brevo", "OK"), brevo_naive, brevo_update]),
        f"esputnik/dates.{kind}": text_of(kind, "esputnik", [order("esputnik", "OK"), esputnik_naive]),
        f"bonifiq/dates.{kind}": text_of(kind, "bonifiq", [bonifiq_naive, bonifiq_offset]),
    }
    result = run(tmp_path, files)
    brevo_rows = quarantined(result, f"brevo/dates.{kind}")
    assert {loc: r["reason_code"] for loc, r in brevo_rows.items()} == {
        locator(kind, 1): "invalid_timestamp",
        locator(kind, 2): "invalid_timestamp",
    }
    assert "offset" in brevo_rows[locator(kind, 1)]["reason"]
    assert "delivery.date" in brevo_rows[locator(kind, 2)]["reason"]
    esputnik_rows = quarantined(result, f"esputnik/dates.{kind}")
    assert [(r["record_locator"], r["reason_code"]) for r in esputnik_rows.values()] == [
        (locator(kind, 1), "invalid_timestamp")
    ]
    bonifiq = result.events.filter(pl.col("source") == "bonifiq").sort("source_order_id")
    assert bonifiq.select("source_order_id", "placed_at", "delivered_at").rows() == [
        ("NAIVE", datetime(2024, 3, 5, 11, 45), datetime(2024, 3, 7, 9, 0)),
        ("OFFSET", datetime(2024, 3, 5, 11, 45), datetime(2024, 3, 7, 9, 0)),
    ]


# --- lenient JSON ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["json", "ndjson", "csv", "json.gz"])
def test_a_trailing_comma_inside_a_record_makes_that_record_malformed_and_only_that_one(
    tmp_path: Path, kind: str
) -> None:
    """DuckDB's reader would take `{"a": 1,}`; it is not JSON. In a JSON array the broken element is one record
    and the elements after it are still read; a comma before the array's `]` holds no record and is let be."""
    files = {}
    for source in SOURCES:
        marked = order(source, "COMMA")
        items_of(marked, source)[0]["zz"] = "@@COMMA@@"
        text = text_of(kind, source, [order(source, "A"), marked, order(source, "B")])
        text = text.replace(', ""zz"": ""@@COMMA@@""', ",").replace(', "zz": "@@COMMA@@"', ",")
        if kind.startswith("json"):
            text = text.rstrip().removesuffix("]") + ",]"
        files[f"{source}/comma.{kind}"] = as_bytes(kind, text)
    result = run(tmp_path, files)
    for source in SOURCES:
        path = f"{source}/comma.{kind}"
        assert accepted_ids(result, path) == ["A", "B"]
        (row,) = quarantined(result, path).values()
        assert (row["record_locator"], row["reason_code"]) == (locator(kind, 1), "malformed_json")
        if not kind.startswith("csv"):
            assert row["raw_record"].startswith("{") and row["raw_record"].endswith("}")
            assert ",}" in row["raw_record"]


# --- duplicate keys -------------------------------------------------------------------------------

DUPLICATES = {  # (where in the record, the key repeated with another value)
    "brevo": [("top", "email"), ("financial", "subtotal"), ("item", "quantity")],
    "bonifiq": [("top", "OrderTotal"), ("Customer", "OriginalId"), ("item", "Price")],
    "esputnik": [("top", "status"), ("item", "cost"), ("item", "quantity")],
}


@pytest.mark.parametrize("kind", ["json", "ndjson", "ndjson.gz"])
def test_duplicate_keys_make_a_record_malformed(tmp_path: Path, kind: str) -> None:
    files = {}
    for source in SOURCES:
        records: list[dict | str] = [order(source, "OK")]
        for where, key in DUPLICATES[source]:
            record = order(source, f"DUP-{len(records)}")
            target = record if where == "top" else items_of(record, source)[0] if where == "item" else record[where]
            target["@@DUP@@"] = 0
            repeated = json.dumps({key: "1" if isinstance(target[key], str) else 1})[1:-1]
            records.append(json.dumps(record).replace('"@@DUP@@": 0', repeated))
        files[f"{source}/dup.{kind}"] = as_bytes(kind, text_of(kind, source, records))
    result = run(tmp_path, files)
    for source in SOURCES:
        path = f"{source}/dup.{kind}"
        assert accepted_ids(result, path) == ["OK"]
        rows = quarantined(result, path)
        assert {loc: r["reason_code"] for loc, r in rows.items()} == {
            locator(kind, n): "malformed_json" for n in (1, 2, 3)
        }
        for n, (_, key) in enumerate(DUPLICATES[source], start=1):
            assert f'duplicate key "{key}"' in rows[locator(kind, n)]["reason"]


@pytest.mark.parametrize(
    ("column", "reason"),
    [("email", "column email twice"), ("items.note", "column items and columns nested under it")],
)
def test_csv_header_naming_a_field_twice_makes_every_row_malformed(tmp_path: Path, column: str, reason: str) -> None:
    """`email,...,email`: which cell is the e-mail? `items` beside `items.note`: is items a list or an object?"""
    header, *rows = to_csv([order("esputnik", "A"), order("esputnik", "B")], "items").splitlines()
    text = "\n".join([f"{header},{column}", *(f"{row},other@example.com" for row in rows)]) + "\n"
    result = run(tmp_path, {"esputnik/dup.csv": text})
    rows_out = quarantined(result, "esputnik/dup.csv")
    assert {loc: r["reason_code"] for loc, r in rows_out.items()} == {
        "line 2": "malformed_json",
        "line 3": "malformed_json",
    }
    assert all(reason in r["reason"] for r in rows_out.values()), rows_out


# --- empty files ----------------------------------------------------------------------------------


def test_empty_files_hold_no_records(tmp_path: Path) -> None:
    """0 bytes, `[]` and whitespace only: no record, no error. In NDJSON `[]` is a line holding an array where
    an order is due: one malformed record. In CSV `[]` is a header with no rows."""
    contents = {"zero": "", "brackets": "[]", "blank": "  \r\n\t\n \n", "envelope": '{"orders": []}'}
    files = {}
    for kind in KINDS:
        for name, content in contents.items():
            if name == "envelope" and not kind.startswith("json"):
                continue
            files[f"esputnik/{name}.{kind}"] = as_bytes(kind, content)
    files["esputnik/header_only.csv"] = "externalOrderId,status,date\n"
    result = run(tmp_path, files)
    assert result.errors == []
    for path in files:
        malformed = path.startswith("esputnik/brackets.ndjson")
        assert counts(result, path) == ((1, 0, 1) if malformed else (0, 0, 0)), path
        if malformed:
            (row,) = quarantined(result, path).values()
            assert (row["reason_code"], row["raw_record"]) == ("malformed_json", "[]")


def test_blank_lines_before_a_csv_header_are_not_the_header(tmp_path: Path) -> None:
    """Found by the fuzzer: an empty first line made a header of no columns, and DuckDB stopped the run."""
    text = to_csv([order("esputnik", "A"), order("esputnik", "B")], "items")
    result = run(tmp_path, {"esputnik/blank_first.csv": "\r\n  \n" + text, "esputnik/blank_only.csv": "\n\n , \n"})
    assert accepted_ids(result, "esputnik/blank_first.csv") == ["A", "B"]
    assert counts(result, "esputnik/blank_only.csv") == (0, 0, 0)


# --- items without a count ------------------------------------------------------------------------


def test_an_item_without_a_quantity_is_quarantined_not_a_failed_run(tmp_path: Path) -> None:
    """Found by the fuzzer: a Brevo or BonifiQ item without a quantity was accepted, then core.order_items
    (quantity > 0, not null) refused the whole batch. Not a positive integer: invalid_quantity. eSputnik
    requires the field (SPEC §2.3): missing_required_field."""
    files, quantity_key = {}, {"brevo": "quantity", "bonifiq": "Quantity", "esputnik": "quantity"}
    for source in SOURCES:
        without, null = order(source, "NONE"), order(source, "NULL")
        del items_of(without, source)[0][quantity_key[source]]
        items_of(null, source)[0][quantity_key[source]] = None
        files[f"{source}/qty.ndjson"] = text_of("ndjson", source, [order(source, "A"), without, null])
    result = run(tmp_path, files)
    for source in SOURCES:
        rows = quarantined(result, f"{source}/qty.ndjson")
        code = "missing_required_field" if source == "esputnik" else "invalid_quantity"
        assert {loc: r["reason_code"] for loc, r in rows.items()} == {"line 2": code, "line 3": code}
        assert all("quantity" in r["reason"].lower() for r in rows.values())
    canonical = build_canonical(result.events, default_rules())
    assert canonical.order_items["quantity"].min() > 0


# --- fields and columns nobody asked for ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["json", "ndjson", "csv"])
def test_unknown_fields_are_ignored(tmp_path: Path, kind: str) -> None:
    files = {}
    for source in SOURCES:
        plain = order(source, "A")
        extended = order(source, "A")
        extended["unknownTopLevel"] = {"nested": [1, 2, {"deeper": "x"}]}
        extended["anotherOne"] = "text"
        items_of(extended, source)[0]["unknownItemField"] = "y"
        files[f"{source}/plain.{kind}"] = text_of(kind, source, [plain])
        files[f"{source}/unknown.{kind}"] = text_of(kind, source, [extended])
    result = run(tmp_path, files)
    assert result.quarantine.height == 0, result.quarantine.to_dicts()
    columns = ["order_id", "status", "placed_at", "net_amount", "currency", "email", "phone", "items"]
    for source in SOURCES:
        plain = result.events.filter(pl.col("source_file") == f"{source}/plain.{kind}").select(columns)
        extended = result.events.filter(pl.col("source_file") == f"{source}/unknown.{kind}").select(columns)
        assert extended.height == 1 and extended.equals(plain), source


REQUIRED_COLUMN = {"brevo": "id", "bonifiq": "OrderTotal", "esputnik": "date"}
OPTIONAL_COLUMN = {"brevo": "shipping.method", "bonifiq": "SalesPerson", "esputnik": "deliveryAddress"}


@pytest.mark.parametrize("dropped", ["required", "optional"])
def test_csv_with_missing_columns(tmp_path: Path, dropped: str) -> None:
    files = {}
    for source in SOURCES:
        column = (REQUIRED_COLUMN if dropped == "required" else OPTIONAL_COLUMN)[source]
        records = []
        for order_id in ("A", "B"):
            record = order(source, order_id)
            if "." in column:
                del record[column.split(".")[0]][column.split(".")[1]]
            else:
                del record[column]
            records.append(record)
        text = to_csv(records, ITEM_COLUMNS[source])
        assert column not in text.splitlines()[0].split(",")
        files[f"{source}/missing.csv"] = text
    result = run(tmp_path, files)
    for source in SOURCES:
        path = f"{source}/missing.csv"
        if dropped == "optional":
            assert counts(result, path) == (2, 2, 0), quarantined(result, path)
            continue
        assert counts(result, path) == (2, 0, 2)
        for row in quarantined(result, path).values():
            assert row["reason_code"] == "missing_required_field", row
            assert REQUIRED_COLUMN[source] in row["reason"]


def test_csv_with_extra_columns_and_rows_of_the_wrong_width(tmp_path: Path) -> None:
    text = to_csv([order("esputnik", "A"), order("esputnik", "B"), order("esputnik", "C")], "items")
    header, a, b, c = text.splitlines()
    widened = "\n".join([header + ",vendorNote,exportedBy", a + ",hello,ops", b + ",,", c + ",x"]) + "\n"
    too_many = "\n".join([header, a, b + ",surplus", c[: c.index(",", c.index(",") + 1)]]) + "\n"
    result = run(tmp_path, {"esputnik/extra.csv": widened, "esputnik/width.csv": too_many})
    assert accepted_ids(result, "esputnik/extra.csv") == ["A", "B"]
    assert {loc: r["reason_code"] for loc, r in quarantined(result, "esputnik/extra.csv").items()} == {
        "line 4": "malformed_json"  # 15 fields where the header has 16
    }
    assert accepted_ids(result, "esputnik/width.csv") == ["A"]
    rows = quarantined(result, "esputnik/width.csv")
    assert {loc: r["reason_code"] for loc, r in rows.items()} == {
        "line 3": "malformed_json",
        "line 4": "malformed_json",
    }
    assert all("fields where the header has" in r["reason"] for r in rows.values())


# --- line endings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_windows_line_endings(tmp_path: Path, kind: str) -> None:
    files, bad_texts = {}, {}
    for source in SOURCES:
        bad = order(source, "BAD")
        bad["status" if source != "bonifiq" else "OrderTotal"] = "LOST" if source != "bonifiq" else -1
        text = text_of(kind, source, [order(source, "A"), bad, order(source, "B")])
        crlf = text.replace("\n", "\r\n")
        bad_texts[source] = crlf.splitlines()[2 if kind.startswith("csv") else 1].removesuffix(",")
        files[f"{source}/crlf.{kind}"] = as_bytes(kind, crlf)
    result = run(tmp_path, files)
    for source in SOURCES:
        path = f"{source}/crlf.{kind}"
        assert accepted_ids(result, path) == ["A", "B"]
        (row,) = quarantined(result, path).values()
        expected = "negative_amount" if source == "bonifiq" else "unknown_status"
        assert (row["record_locator"], row["reason_code"]) == (locator(kind, 1), expected)
        assert row["raw_record"] == bad_texts[source] and "\r" not in row["raw_record"]
    amounts = result.events.filter(pl.col("source_file") == "esputnik/crlf." + kind)["net_amount"].to_list()
    assert amounts == [Decimal("990.00"), Decimal("990.00")]
