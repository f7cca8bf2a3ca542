"""Quarantine (SPEC §4): every bad record gets exactly one reason code, the first in SPEC order, its raw text
verbatim and its locator, while the good records beside it in the same file are accepted.

Each test writes small raw files under `tmp_path/<source>/...`, then runs `discover_files` + `parse_files`.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from pipelines.ingest import ParseResult
from tests.helpers import INGESTED_AT, parse, write

DROP = object()  # a field value meaning "leave the field out"


# --- helpers --------------------------------------------------------------------------------------


def counts(result: ParseResult, path: str) -> tuple[int, int, int]:
    row = result.files.filter(pl.col("path") == path).to_dicts()
    assert len(row) == 1, result.files
    return row[0]["records_read"], row[0]["records_accepted"], row[0]["records_quarantined"]


def merged(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def brevo_item(**kw) -> dict:
    return merged({"id": "P-1", "name": "Tazza", "quantity": 2, "price": 12.5, "category": ["Casa"]}, kw)


def brevo(order_id: str = "B-1", **kw) -> dict:
    base = {
        "id": order_id,
        "email": "ana@example.com",
        "customerId": "C-1",
        "date": "2024-01-25T14:30:00Z",
        "status": "Completed",
        "billing": {"name": "Ana Lima", "city": "Roma"},
        "products": [brevo_item()],
        "financial": {"subtotal": 25.0, "shipping": 4.9, "discount": 5, "total": 24.9, "currency": "EUR"},
        "loyalty": {"pointsEarned": 20, "couponUsed": "SAVE5", "couponDiscount": 5},
    }
    return merged(base, kw)


def brevo_update(order_id: str = "B-1", **kw) -> dict:
    base = {"id": order_id, "status": "Delivered", "delivery": {"date": "2024-01-28T16:30:00Z"}}
    return merged(base, kw)


def bonifiq_item(**kw) -> dict:
    return merged(
        {"OriginalId": "SKU-1", "Name": "Bolsa", "Quantity": 1, "Price": 100.0, "Category": "Luxury"}, kw
    )


def bonifiq(order_id: str = "PED-1", **kw) -> dict:
    base = {
        "OriginalId": order_id,
        "OrderPlacementDate": "2024-03-05T11:45:00Z",
        "OrderCompletedDate": "2024-03-07T09:00:00Z",
        "OrderCancelledDate": None,
        "OrderStatus": "Faturado",
        "IsCompleted": True,
        "IsCancelledOrReturned": False,
        "OrderTotal": 100.0,
        "Customer": {"OriginalId": "maria@example.com.br", "Name": "Maria Silva"},
        "Products": [bonifiq_item()],
        "LastUpdate": "2024-03-07T09:00:00Z",
    }
    return merged(base, kw)


def esputnik_item(**kw) -> dict:
    base = {
        "externalItemId": "200600",
        "name": "Super Device",
        "category": "devices",
        "quantity": 1,
        "cost": 990,
        "url": "http://example.com/item/200600",
        "imageUrl": "http://example.com/item/200600/image.png",
    }
    return merged(base, kw)


def esputnik(order_id: str = "100500", **kw) -> dict:
    base = {
        "externalOrderId": order_id,
        "externalCustomerId": "12345",
        "totalCost": 1000,
        "status": "DELIVERED",
        "date": "2017-03-08T09:30:00+02:00",
        "email": "mail@example.com",
        "phone": "380942583691",
        "currency": "USD",
        "shipping": 10,
        "discount": 0,
        "items": [esputnik_item()],
    }
    return merged(base, kw)


GOOD = {"brevo": brevo, "bonifiq": bonifiq, "esputnik": esputnik}


def quarantine_one(tmp_path: Path, source: str, bad: dict | str) -> dict:
    """An ndjson file `good, bad, good`: the bad line is the only record quarantined, the others accepted."""
    bad_line = bad if isinstance(bad, str) else json.dumps(bad, ensure_ascii=False)
    good = [json.dumps(GOOD[source](f"GOOD-{n}")) for n in (1, 2)]
    write(tmp_path, f"{source}/batch.ndjson", good[0] + "\n" + bad_line + "\n" + good[1] + "\n")
    result = parse(tmp_path)
    assert counts(result, f"{source}/batch.ndjson") == (3, 2, 1), result.quarantine.to_dicts()
    assert result.events["source_order_id"].to_list() == ["GOOD-1", "GOOD-2"]
    rows = result.quarantine.to_dicts()
    assert len(rows) == 1
    row = rows[0]
    assert row["raw_record"] == bad_line  # verbatim, byte for byte
    assert row["record_locator"] == "line 2"
    assert row["source"] == source
    assert row["source_file"] == f"{source}/batch.ndjson"
    assert row["ingested_at"] == INGESTED_AT
    assert row["reason"]
    return row


def assert_reason(row: dict, code: str, *names: str) -> None:
    assert row["reason_code"] == code, row
    for name in names:
        assert name.lower() in row["reason"].lower(), (name, row["reason"])


# --- malformed_json -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("brevo", '{"id": "B-9", "email": "x@example.com", "date": '),
        ("brevo", '{"id": "B-9", "email": "x@example.com"} trailing'),
        ("bonifiq", '{"OriginalId": "PED-9", "OrderTotal": 10'),
        ("esputnik", "[1, 2]"),
        ("esputnik", '"an order"'),
        ("esputnik", "{'externalOrderId': '9'}"),
    ],
)
def test_malformed_json_line(tmp_path: Path, source: str, bad: str) -> None:
    row = quarantine_one(tmp_path, source, bad)
    assert_reason(row, "malformed_json")


def test_malformed_json_array_element_is_one_record(tmp_path: Path) -> None:
    good_a = json.dumps(esputnik("A"), indent=2)
    good_b = json.dumps(esputnik("B"), indent=2)
    text = "[\n" + good_a + ",\n  42  ,\n" + good_b + "\n]\n"
    write(tmp_path, "esputnik/batch.json", text)
    result = parse(tmp_path)
    assert counts(result, "esputnik/batch.json") == (3, 2, 1)
    row = result.quarantine.to_dicts()[0]
    assert (row["reason_code"], row["record_locator"], row["raw_record"]) == (
        "malformed_json",
        "index 1",
        "42",
    )
    assert "object" in row["reason"]


def test_malformed_json_csv_items_column(tmp_path: Path) -> None:
    item = json.dumps([esputnik_item()]).replace('"', '""')
    header = "externalOrderId,externalCustomerId,totalCost,status,date,email,items"
    good = [f'G{n},1,1000,DELIVERED,2017-03-08T09:30:00+02:00,a@example.com,"{item}"' for n in (1, 2)]
    bad = 'B,1,1000,DELIVERED,2017-03-08T09:30:00+02:00,a@example.com,"[{""externalItemId"": "'
    write(tmp_path, "esputnik/t.csv", "\n".join([header, good[0], bad, good[1]]) + "\n")
    result = parse(tmp_path)
    assert counts(result, "esputnik/t.csv") == (3, 2, 1)
    row = result.quarantine.to_dicts()[0]
    assert (row["reason_code"], row["record_locator"], row["raw_record"]) == ("malformed_json", "line 3", bad)
    assert "items" in row["reason"]


# --- missing_required_field -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "bad", "names"),
    [
        ("esputnik", esputnik(DROP, externalOrderId=DROP), ["externalOrderId"]),
        ("esputnik", esputnik(""), ["externalOrderId"]),
        ("esputnik", esputnik("   "), ["externalOrderId"]),
        ("esputnik", esputnik("X", externalCustomerId=DROP), ["externalCustomerId"]),
        ("esputnik", esputnik("X", totalCost=DROP), ["totalCost"]),
        ("esputnik", esputnik("X", status=None), ["status"]),
        ("esputnik", esputnik("X", date=DROP), ["date"]),
        ("esputnik", esputnik("X", items=[esputnik_item(url=DROP)]), ["item 1", "url"]),
        ("esputnik", esputnik("X", items=[esputnik_item(), esputnik_item(url="")]), ["item 2", "url"]),
        ("esputnik", esputnik("X", items=[esputnik_item(imageUrl=DROP)]), ["imageUrl"]),
        ("esputnik", esputnik("X", items=[esputnik_item(externalItemId=DROP)]), ["externalItemId"]),
        ("esputnik", esputnik("X", items=[esputnik_item(quantity=DROP)]), ["quantity"]),
        ("esputnik", esputnik("X", items=[esputnik_item(cost=DROP)]), ["cost"]),
        ("brevo", brevo(DROP, id=DROP), ["id"]),
        ("brevo", brevo(""), ["id"]),
        # a status update with no time at all (delivery.date, fulfillment.date or updatedAt)
        ("brevo", {"id": "GOOD-1", "status": "Shipped", "tracking": {"number": "T1"}}, ["updatedAt"]),
        ("bonifiq", bonifiq(DROP, OriginalId=DROP), ["OriginalId"]),
        ("bonifiq", bonifiq("X", OrderPlacementDate=None), ["OrderPlacementDate"]),
        ("bonifiq", bonifiq("X", OrderTotal=DROP), ["OrderTotal"]),
    ],
)
def test_missing_required_field(tmp_path: Path, source: str, bad: dict, names: list[str]) -> None:
    row = quarantine_one(tmp_path, source, bad)
    assert_reason(row, "missing_required_field", *names)


# --- invalid_type ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "bad", "names"),
    [
        ("esputnik", esputnik("X", totalCost="abc"), ["totalCost"]),
        ("esputnik", esputnik("X", shipping="free"), ["shipping"]),
        ("esputnik", esputnik("X", items={"externalItemId": "1"}), ["items"]),
        ("esputnik", esputnik("X", items=[esputnik_item(quantity="two")]), ["quantity", "two"]),
        ("esputnik", esputnik("X", items=[esputnik_item(cost="n/a")]), ["cost"]),
        ("esputnik", esputnik("X", items=["200600"]), ["item 1"]),
        ("brevo", brevo("X", financial={"subtotal": "ten", "currency": "EUR"}), ["financial.subtotal"]),
        ("brevo", brevo("X", financial=DROP, products=DROP, revenue="lots"), ["revenue"]),
        ("brevo", brevo("X", products="P-1"), ["products"]),
        ("brevo", brevo("X", products=[brevo_item(price="abc")]), ["price"]),
        ("brevo", brevo("X", products=[brevo_item(quantity="two")]), ["quantity"]),
        ("brevo", brevo("X", loyalty={"pointsEarned": "many"}), ["loyalty.pointsEarned"]),
        ("bonifiq", bonifiq("X", OrderTotal="R$ 120"), ["OrderTotal"]),
        ("bonifiq", bonifiq("X", IsCompleted="sim"), ["IsCompleted"]),
        ("bonifiq", bonifiq("X", Products={"OriginalId": "SKU-1"}), ["Products"]),
        ("bonifiq", bonifiq("X", Products=[bonifiq_item(Quantity="um")]), ["Quantity"]),
        ("bonifiq", bonifiq("X", Products=[bonifiq_item(Price="cem")]), ["Price"]),
        # an object or a list where text is due
        ("esputnik", esputnik({"id": "X"}), ["externalOrderId"]),
        ("esputnik", esputnik("X", email=["a@example.com"]), ["email"]),
        ("brevo", brevo("X", email={"address": "a@example.com"}), ["email"]),
        ("bonifiq", bonifiq("X", Customer={"OriginalId": ["a@example.com"]}), ["Customer.OriginalId"]),
    ],
)
def test_invalid_type(tmp_path: Path, source: str, bad: dict, names: list[str]) -> None:
    row = quarantine_one(tmp_path, source, bad)
    assert_reason(row, "invalid_type", *names)


def test_invalid_type_price_without_quantity_names_the_price(tmp_path: Path) -> None:
    row = quarantine_one(tmp_path, "brevo", brevo("X", products=[brevo_item(quantity=DROP, price="abc")]))
    assert_reason(row, "invalid_type", "price", "abc")
    assert "quantity" not in row["reason"]


def test_invalid_type_line_amount_too_large_does_not_stop_the_run(tmp_path: Path) -> None:
    row = quarantine_one(
        tmp_path, "esputnik", esputnik("X", items=[esputnik_item(cost=9999999999999999.99, quantity=1000)])
    )
    assert_reason(row, "invalid_type", "cost")


# --- invalid_timestamp ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "bad", "names"),
    [
        ("esputnik", esputnik("X", date="2017-03-08T09:30:00"), ["date", "offset"]),  # no offset
        ("esputnik", esputnik("X", date="2017-03-08"), ["date", "offset"]),  # a bare date has no offset
        ("esputnik", esputnik("X", date="yesterday"), ["date"]),
        ("esputnik", esputnik("X", date="2017-02-30T09:30:00+02:00"), ["date"]),
        ("brevo", brevo("X", date="2024-13-45T00:00:00Z"), ["date"]),
        ("brevo", brevo("X", date="2024-01-25T14:30:00"), ["date"]),
        ("brevo", brevo_update("GOOD-1", delivery={"date": "28/01/2024"}), ["delivery.date"]),
        ("brevo", brevo_update("GOOD-1", delivery=DROP, status="Cancelled", updatedAt="soon"), ["updatedAt"]),
        ("bonifiq", bonifiq("X", OrderPlacementDate="ontem"), ["OrderPlacementDate"]),
        ("bonifiq", bonifiq("X", OrderCompletedDate="2024-03-32T09:00:00Z"), ["OrderCompletedDate"]),
        ("bonifiq", bonifiq("X", LastUpdate="x"), ["LastUpdate"]),
    ],
)
def test_invalid_timestamp(tmp_path: Path, source: str, bad: dict, names: list[str]) -> None:
    row = quarantine_one(tmp_path, source, bad)
    assert_reason(row, "invalid_timestamp", *names)


# --- missing_contact ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "bad", "names"),
    [
        ("esputnik", esputnik("X", email=DROP, phone=DROP), ["email", "phone"]),
        ("esputnik", esputnik("X", email="", phone="  "), ["email", "phone"]),
        ("esputnik", esputnik("X", email=None, phone=None), ["email", "phone"]),
        ("brevo", brevo("X", email=DROP), ["email"]),
        ("brevo", brevo("X", email=" "), ["email"]),
        ("bonifiq", bonifiq("X", Customer=DROP), ["Customer"]),
    ],
)
def test_missing_contact(tmp_path: Path, source: str, bad: dict, names: list[str]) -> None:
    row = quarantine_one(tmp_path, source, bad)
    assert_reason(row, "missing_contact", *names)


def test_contact_by_phone_alone_is_enough_for_esputnik(tmp_path: Path) -> None:
    write(tmp_path, "esputnik/a.ndjson", json.dumps(esputnik("X", email=DROP)) + "\n")
    result = parse(tmp_path)
    assert result.quarantine.height == 0
    assert result.events["phone"].to_list() == ["380942583691"]


def test_brevo_status_update_needs_no_email(tmp_path: Path) -> None:
    lines = [json.dumps(brevo("B-1")), json.dumps(brevo_update("B-1"))]
    write(tmp_path, "brevo/a.ndjson", "\n".join(lines) + "\n")
    result = parse(tmp_path)
    assert result.quarantine.height == 0, result.quarantine.to_dicts()
    assert result.events["record_kind"].to_list() == ["order", "update"]


# --- inconsistent_state ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "names"),
    [
        (bonifiq("X", IsCompleted=True, OrderCompletedDate=None), ["IsCompleted", "OrderCompletedDate"]),
        (bonifiq("X", IsCompleted=True, OrderCompletedDate=DROP), ["IsCompleted", "OrderCompletedDate"]),
        (
            bonifiq(
                "X",
                IsCompleted=False,
                OrderCompletedDate=None,
                IsCancelledOrReturned=True,
                OrderCancelledDate=None,
            ),
            ["IsCancelledOrReturned", "OrderCancelledDate"],
        ),
        (
            bonifiq("X", IsCancelledOrReturned=True, OrderCancelledDate="2024-03-08T10:00:00Z"),
            ["IsCancelledOrReturned", "IsCompleted"],
        ),
        (bonifiq("X", IsCompleted=False), ["OrderCompletedDate", "IsCompleted"]),
        (bonifiq("X", IsCompleted=DROP), ["OrderCompletedDate", "IsCompleted"]),
        (
            bonifiq("X", OrderCancelledDate="2024-03-08T10:00:00Z"),
            ["OrderCancelledDate", "IsCancelledOrReturned"],
        ),
        (
            bonifiq(
                "X",
                IsCompleted=False,
                OrderCompletedDate=None,
                IsCancelledOrReturned=False,
                OrderCancelledDate="2024-03-08T10:00:00Z",
            ),
            ["OrderCancelledDate", "IsCancelledOrReturned"],
        ),
    ],
)
def test_inconsistent_state(tmp_path: Path, bad: dict, names: list[str]) -> None:
    row = quarantine_one(tmp_path, "bonifiq", bad)
    assert_reason(row, "inconsistent_state", *names)


def test_consistent_bonifiq_states_are_accepted(tmp_path: Path) -> None:
    records = [
        bonifiq("P", IsCompleted=False, OrderCompletedDate=None),
        bonifiq("D"),
        bonifiq(
            "C",
            IsCompleted=False,
            OrderCompletedDate=None,
            IsCancelledOrReturned=True,
            OrderCancelledDate="2024-03-08T10:00:00Z",
        ),
    ]
    write(tmp_path, "bonifiq/a.json", json.dumps(records))
    result = parse(tmp_path)
    assert result.quarantine.height == 0, result.quarantine.to_dicts()
    assert result.events["status"].to_list() == ["pending", "delivered", "cancelled"]


# --- unknown_status -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "bad", "names"),
    [
        ("brevo", brevo("X", status="Lost"), ["status", "Lost"]),
        ("brevo", brevo_update("GOOD-1", status="Teleported"), ["status", "Teleported"]),
        ("esputnik", esputnik("X", status="PAID"), ["status", "PAID"]),
    ],
)
def test_unknown_status(tmp_path: Path, source: str, bad: dict, names: list[str]) -> None:
    row = quarantine_one(tmp_path, source, bad)
    assert_reason(row, "unknown_status", *names)


def test_known_statuses_are_case_insensitive_for_brevo(tmp_path: Path) -> None:
    lines = [json.dumps(brevo("B-1", status=s)) for s in ("pending", "SHIPPED", "Canceled", "returned")]
    write(tmp_path, "brevo/a.ndjson", "\n".join(lines) + "\n")
    result = parse(tmp_path)
    assert result.quarantine.height == 0
    assert result.events["status"].to_list() == ["pending", "pending", "cancelled", "cancelled"]


# --- negative_amount ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "bad", "names"),
    [
        ("esputnik", esputnik("X", totalCost=-1), ["totalCost"]),
        ("esputnik", esputnik("X", shipping=-1), ["shipping"]),
        ("esputnik", esputnik("X", discount=-1), ["discount"]),
        ("esputnik", esputnik("X", totalCost=5, shipping=10), ["net"]),
        ("esputnik", esputnik("X", items=[esputnik_item(), esputnik_item(cost=-1)]), ["item 2", "cost"]),
        (
            "brevo",
            brevo("X", financial={"subtotal": 10, "discount": -1, "currency": "EUR"}),
            ["financial.discount"],
        ),
        ("brevo", brevo("X", financial={"subtotal": 10, "discount": 20, "currency": "EUR"}), ["net"]),
        ("brevo", brevo("X", financial=DROP, products=DROP, revenue=-3), ["revenue"]),
        ("brevo", brevo("X", products=[brevo_item(price=-1)]), ["price"]),
        ("brevo", brevo("X", loyalty={"couponUsed": "C", "couponDiscount": -5}), ["loyalty.couponDiscount"]),
        ("bonifiq", bonifiq("X", OrderTotal=-0.01), ["OrderTotal"]),
        ("bonifiq", bonifiq("X", Products=[bonifiq_item(Price=-1)]), ["Price"]),
    ],
)
def test_negative_amount(tmp_path: Path, source: str, bad: dict, names: list[str]) -> None:
    row = quarantine_one(tmp_path, source, bad)
    assert_reason(row, "negative_amount", *names)


# --- invalid_quantity -----------------------------------------------------------------------------

ITEMS = {
    "brevo": lambda q: brevo("X", products=[brevo_item(), brevo_item(quantity=q)]),
    "bonifiq": lambda q: bonifiq("X", Products=[bonifiq_item(), bonifiq_item(Quantity=q)]),
    "esputnik": lambda q: esputnik("X", items=[esputnik_item(), esputnik_item(quantity=q)]),
}


@pytest.mark.parametrize("source", ["brevo", "bonifiq", "esputnik"])
@pytest.mark.parametrize("quantity", [0, 1.5, -2, "0.5", 1e20])
def test_invalid_quantity(tmp_path: Path, source: str, quantity) -> None:
    row = quarantine_one(tmp_path, source, ITEMS[source](quantity))
    assert_reason(row, "invalid_quantity", "item 2", "quantity")


def test_integral_quantities_written_as_decimals_are_accepted(tmp_path: Path) -> None:
    write(tmp_path, "esputnik/a.ndjson", json.dumps(ITEMS["esputnik"](2.0)) + "\n")
    result = parse(tmp_path)
    assert result.quarantine.height == 0
    assert [i["quantity"] for i in result.events["items"].to_list()[0]] == [1, 2]


# --- unknown_currency -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "bad", "names"),
    [
        (
            "brevo",
            brevo("X", financial={"subtotal": 10, "discount": 0, "currency": "XYZ"}),
            ["currency", "XYZ"],
        ),
        ("esputnik", esputnik("X", currency="JPY"), ["currency", "JPY"]),
    ],
)
def test_unknown_currency(tmp_path: Path, source: str, bad: dict, names: list[str]) -> None:
    row = quarantine_one(tmp_path, source, bad)
    assert_reason(row, "unknown_currency", *names)


def test_currency_defaults_per_source_and_is_case_insensitive(tmp_path: Path) -> None:
    write(
        tmp_path,
        "esputnik/a.ndjson",
        json.dumps(esputnik("1", currency=DROP)) + "\n" + json.dumps(esputnik("2", currency="eur")) + "\n",
    )
    write(tmp_path, "bonifiq/a.json", json.dumps(bonifiq("1")))
    result = parse(tmp_path)
    assert result.quarantine.height == 0
    assert dict(zip(result.events["order_id"], result.events["currency"], strict=True)) == {
        "bonifiq:1": "BRL",
        "esputnik:1": "USD",
        "esputnik:2": "EUR",
    }


# --- the first code in SPEC order wins ------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "bad", "code"),
    [
        ("esputnik", esputnik(DROP, externalOrderId=DROP, totalCost="abc"), "missing_required_field"),
        ("esputnik", esputnik("X", totalCost="abc", date="2017-03-08T09:30:00"), "invalid_type"),
        ("esputnik", esputnik("X", date="2017-03-08T09:30:00", email=DROP, phone=DROP), "invalid_timestamp"),
        ("esputnik", esputnik("X", email=DROP, phone=DROP, status="PAID"), "missing_contact"),
        ("esputnik", esputnik("X", status="PAID", totalCost=-1), "unknown_status"),
        ("esputnik", esputnik("X", totalCost=-1, currency="JPY"), "negative_amount"),
        ("esputnik", esputnik("X", items=[esputnik_item(quantity=0)], currency="JPY"), "invalid_quantity"),
        # item-level codes compete with record-level ones, and with each other, in the same order
        (
            "esputnik",
            esputnik("X", totalCost="abc", items=[esputnik_item(url=DROP)]),
            "missing_required_field",
        ),
        ("esputnik", esputnik("X", status="PAID", items=[esputnik_item(cost="x")]), "invalid_type"),
        (
            "esputnik",
            esputnik("X", items=[esputnik_item(quantity=0), esputnik_item(cost=-1)]),
            "negative_amount",
        ),
        (
            "esputnik",
            esputnik("X", items=[esputnik_item(cost=-1), esputnik_item(url=DROP)]),
            "missing_required_field",
        ),
        ("brevo", brevo(DROP, id=DROP, email=DROP), "missing_required_field"),
        ("brevo", brevo("X", email=DROP, status="Lost"), "missing_contact"),
        ("brevo", brevo("X", products=[brevo_item(quantity=0), brevo_item(price=-2)]), "negative_amount"),
        ("bonifiq", bonifiq("X", IsCompleted=False, OrderTotal=-1), "inconsistent_state"),
        ("bonifiq", bonifiq("X", Customer=DROP, IsCompleted=False), "missing_contact"),
        ("bonifiq", bonifiq("X", OrderTotal=-1, Products=[bonifiq_item(Quantity=0)]), "negative_amount"),
    ],
)
def test_a_record_failing_several_rules_gets_the_first_code_in_spec_order(
    tmp_path: Path, source: str, bad: dict, code: str
) -> None:
    row = quarantine_one(tmp_path, source, bad)
    assert row["reason_code"] == code, row["reason"]


def test_each_record_gets_its_own_reason_in_one_file(tmp_path: Path) -> None:
    """Many bad records side by side: one row each, with its own code, locator and raw text."""
    records = [
        esputnik("ok-1"),
        esputnik("X", totalCost="abc"),
        esputnik("X", email=DROP, phone=DROP),
        esputnik("ok-2"),
        esputnik("X", status="PAID"),
        esputnik("X", items=[esputnik_item(quantity=0)]),
        esputnik("ok-3"),
    ]
    lines = [json.dumps(r) for r in records]
    write(tmp_path, "esputnik/a.ndjson", "\n".join(lines) + "\n")
    result = parse(tmp_path)
    assert counts(result, "esputnik/a.ndjson") == (7, 3, 4)
    assert result.events["source_order_id"].to_list() == ["ok-1", "ok-2", "ok-3"]
    assert result.quarantine.select("record_locator", "reason_code", "raw_record").rows() == [
        ("line 2", "invalid_type", lines[1]),
        ("line 3", "missing_contact", lines[2]),
        ("line 5", "unknown_status", lines[4]),
        ("line 6", "invalid_quantity", lines[5]),
    ]


# --- raw_record verbatim in every file kind -------------------------------------------------------


def test_raw_record_is_the_exact_array_element(tmp_path: Path) -> None:
    bad = '{ "externalOrderId" : "X",\n      "totalCost": "abc" ,  "status":"DELIVERED"  }'
    text = (
        '{"orders": [\n  '
        + json.dumps(esputnik("A"))
        + ",\n      "
        + bad
        + " ,\n"
        + json.dumps(esputnik("B"))
        + "]}"
    )
    write(tmp_path, "esputnik/batch.json", text)
    result = parse(tmp_path)
    assert counts(result, "esputnik/batch.json") == (3, 2, 1)
    row = result.quarantine.to_dicts()[0]
    assert (row["record_locator"], row["raw_record"]) == ("index 1", bad)
    assert row["reason_code"] == "missing_required_field"  # externalCustomerId, date, ... are absent


def test_raw_record_of_a_single_object_file_is_the_file(tmp_path: Path) -> None:
    text = json.dumps(bonifiq("X", OrderTotal=-1), indent=4) + "\n"
    write(tmp_path, "bonifiq/one.json", text)
    write(tmp_path, "bonifiq/two.json", json.dumps(bonifiq("Y")))
    result = parse(tmp_path)
    assert counts(result, "bonifiq/one.json") == (1, 0, 1)
    assert counts(result, "bonifiq/two.json") == (1, 1, 0)
    row = result.quarantine.to_dicts()[0]
    assert (row["record_locator"], row["reason_code"], row["raw_record"]) == (
        "object",
        "negative_amount",
        text,
    )


def test_raw_record_of_a_csv_row_is_the_row(tmp_path: Path) -> None:
    header = (
        "OriginalId,OrderPlacementDate,OrderCompletedDate,IsCompleted,IsCancelledOrReturned,OrderTotal,"
        "Customer.OriginalId,Customer.Name,Products"
    )
    products = json.dumps([bonifiq_item()]).replace('"', '""')
    good1 = f'P1,2024-03-05T11:45:00Z,2024-03-07T09:00:00Z,true,false,100.00,a@example.com,Ana,"{products}"'
    bad = f'P2,2024-03-05T11:45:00Z,,true,false,100.00,"b@example.com","Silva, Maria","{products}"'
    good2 = "P3,2024-03-05T11:45:00Z,,false,false,100.00,c@example.com,,"
    write(tmp_path, "bonifiq/t.csv", "\r\n".join([header, good1, bad, good2]) + "\r\n")
    result = parse(tmp_path)
    assert counts(result, "bonifiq/t.csv") == (3, 2, 1)
    row = result.quarantine.to_dicts()[0]
    assert (row["record_locator"], row["raw_record"]) == ("line 3", bad)
    assert_reason(row, "inconsistent_state", "IsCompleted", "OrderCompletedDate")


def test_raw_record_of_a_gzipped_line(tmp_path: Path) -> None:
    bad = json.dumps(esputnik("X", status="PAID"), ensure_ascii=False)
    text = json.dumps(esputnik("A")) + "\n" + bad + "\n"
    write(tmp_path, "esputnik/a.ndjson.gz", gzip.compress(text.encode()))
    result = parse(tmp_path)
    assert counts(result, "esputnik/a.ndjson.gz") == (2, 1, 1)
    row = result.quarantine.to_dicts()[0]
    assert (row["record_locator"], row["reason_code"], row["raw_record"]) == ("line 2", "unknown_status", bad)


def test_raw_record_keeps_non_ascii_text(tmp_path: Path) -> None:
    bad = '{"id": "X", "date": "2024-01-25T14:30:00Z", "billing": {"name": "Zoë Ñúñez — 東京"}, "revenue": 1}'
    row = quarantine_one(tmp_path, "brevo", bad)
    assert_reason(row, "missing_contact", "email")


# --- unknown_order --------------------------------------------------------------------------------


def test_unknown_order_for_an_update_whose_order_never_arrives(tmp_path: Path) -> None:
    lines = [json.dumps(brevo("B-1")), json.dumps(brevo_update("B-404")), json.dumps(brevo_update("B-1"))]
    write(tmp_path, "brevo/a.ndjson", "\n".join(lines) + "\n")
    result = parse(tmp_path)
    assert counts(result, "brevo/a.ndjson") == (3, 2, 1)
    row = result.quarantine.to_dicts()[0]
    assert (row["record_locator"], row["raw_record"]) == ("line 2", lines[1])
    assert_reason(row, "unknown_order", "B-404")
    assert result.events.select("order_id", "record_kind").rows() == [
        ("brevo:B-1", "order"),
        ("brevo:B-1", "update"),
    ]


def test_no_unknown_order_when_the_order_is_already_known(tmp_path: Path) -> None:
    write(tmp_path, "brevo/a.ndjson", json.dumps(brevo_update("B-404")) + "\n")
    result = parse(tmp_path, known_orders=pl.Series(["brevo:B-404"]))
    assert result.quarantine.height == 0
    assert counts(result, "brevo/a.ndjson") == (1, 1, 0)
    assert result.events["status"].to_list() == ["delivered"]


def test_known_orders_of_another_source_do_not_count(tmp_path: Path) -> None:
    write(tmp_path, "brevo/a.ndjson", json.dumps(brevo_update("404")) + "\n")
    result = parse(tmp_path, known_orders=pl.Series(["esputnik:404"]))
    assert result.quarantine["reason_code"].to_list() == ["unknown_order"]


@pytest.mark.parametrize("order_file", ["brevo/0_orders.json", "brevo/9_orders.json", "brevo/sub/orders.csv"])
def test_no_unknown_order_when_the_full_order_is_in_another_file_of_the_batch(
    tmp_path: Path, order_file: str
) -> None:
    write(tmp_path, "brevo/5_updates.ndjson", json.dumps(brevo_update("B-7")) + "\n")
    if order_file.endswith(".csv"):
        write(
            tmp_path,
            order_file,
            "id,email,date,financial.subtotal,financial.discount\n"
            "B-7,a@example.com,2024-01-25T14:30:00Z,10.00,0\n",
        )
    else:
        write(tmp_path, order_file, json.dumps([brevo("B-7")]))
    result = parse(tmp_path)
    assert result.quarantine.height == 0, result.quarantine.to_dicts()
    assert counts(result, "brevo/5_updates.ndjson") == (1, 1, 0)


def test_an_update_for_a_quarantined_order_is_unknown(tmp_path: Path) -> None:
    lines = [json.dumps(brevo("B-1", email=DROP)), json.dumps(brevo_update("B-1"))]
    write(tmp_path, "brevo/a.ndjson", "\n".join(lines) + "\n")
    result = parse(tmp_path)
    assert result.quarantine["reason_code"].to_list() == ["missing_contact", "unknown_order"]


def test_retried_unknown_order_is_accepted_once_its_order_arrives(tmp_path: Path) -> None:
    first = tmp_path / "run1"
    update = json.dumps(brevo_update("B-404"))
    write(first, "brevo/1_updates.ndjson", json.dumps(brevo("B-1")) + "\n" + update + "\n")
    run1 = parse(first)
    assert run1.quarantine["reason_code"].to_list() == ["unknown_order"]

    # next run: the order arrives in a new file; the quarantined update is passed back
    second = tmp_path / "run2"
    write(second, "brevo/2_orders.ndjson", json.dumps(brevo("B-404")) + "\n")
    run2 = parse(second, retry=run1.quarantine)
    assert run2.quarantine.height == 0, run2.quarantine.to_dicts()
    assert (run2.retried, run2.readmitted) == (1, 1)
    assert counts(run2, "brevo/2_orders.ndjson") == (1, 1, 0)
    readmitted = run2.events.filter(pl.col("record_kind") == "update").to_dicts()
    assert len(readmitted) == 1
    event = readmitted[0]
    assert (event["order_id"], event["status"], event["delivered_at"]) == (
        "brevo:B-404",
        "delivered",
        datetime(2024, 1, 28, 16, 30),
    )
    # it keeps where it came from
    assert (event["source_file"], event["record_locator"]) == ("brevo/1_updates.ndjson", "line 2")


def test_retried_unknown_order_is_accepted_when_the_order_is_known(tmp_path: Path) -> None:
    first = tmp_path / "run1"
    write(first, "brevo/1.ndjson", json.dumps(brevo_update("B-404")) + "\n")
    run1 = parse(first)
    second = tmp_path / "run2"
    (second / "brevo").mkdir(parents=True)
    run2 = parse(second, retry=run1.quarantine, known_orders=pl.Series(["brevo:B-404"]))
    assert run2.quarantine.height == 0
    assert run2.readmitted == 1


def test_retried_unknown_order_stays_quarantined_while_its_order_is_missing(tmp_path: Path) -> None:
    first = tmp_path / "run1"
    update = json.dumps(brevo_update("B-404"))
    write(first, "brevo/1.ndjson", update + "\n")
    run1 = parse(first)
    second = tmp_path / "run2"
    write(second, "brevo/2.ndjson", json.dumps(brevo("B-1")) + "\n")
    run2 = parse(second, retry=run1.quarantine)
    assert run2.readmitted == 0
    rows = run2.quarantine.to_dicts()
    assert [(r["reason_code"], r["source_file"], r["record_locator"], r["raw_record"]) for r in rows] == [
        ("unknown_order", "brevo/1.ndjson", "line 1", update)
    ]
    assert counts(run2, "brevo/2.ndjson") == (1, 1, 0)


def test_retried_unknown_order_from_a_csv_row(tmp_path: Path) -> None:
    """A CSV row's raw text is the row, not JSON: retrying it must still read it as that row."""
    first = tmp_path / "run1"
    write(first, "brevo/1.csv", "id,status,delivery.date\nB-404,Delivered,2024-01-28T16:30:00Z\n")
    run1 = parse(first)
    assert run1.quarantine.select("reason_code", "raw_record").rows() == [
        ("unknown_order", "B-404,Delivered,2024-01-28T16:30:00Z")
    ]
    second = tmp_path / "run2"
    write(second, "brevo/2.ndjson", json.dumps(brevo("B-404")) + "\n")
    run2 = parse(second, retry=run1.quarantine)
    assert run2.quarantine.height == 0, run2.quarantine.to_dicts()
    assert run2.readmitted == 1


def test_records_parsed_in_pieces_give_what_one_piece_gives(tmp_path: Path, monkeypatch) -> None:
    """DuckDB parses the records (and the item lists) in pieces of `SCAN_PIECE_ROWS` rows, one to a thread: the
    events and quarantine rows are those of one piece, in the same order."""
    from pipelines.sources import common

    records = [esputnik(f"ok-{i}", items=[esputnik_item(), esputnik_item(quantity=i % 3 + 1)]) for i in range(9)]
    records[2] = esputnik("X", totalCost="abc")
    records[5] = esputnik("X", items=[esputnik_item(), esputnik_item(quantity=0)])
    records[7] = esputnik("X", status="PAID")
    write(tmp_path, "esputnik/a.ndjson", "\n".join(json.dumps(r) for r in records) + "\n")
    whole = parse(tmp_path)
    monkeypatch.setattr(common, "SCAN_PIECE_ROWS", 2)
    pieces = parse(tmp_path)
    assert whole.events.height == 6 and whole.quarantine.height == 3
    assert pieces.events.equals(whole.events)
    assert pieces.quarantine.equals(whole.quarantine)
    assert pieces.quarantine["reason_code"].to_list() == ["invalid_type", "invalid_quantity", "unknown_status"]
