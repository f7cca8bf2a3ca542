"""Tests of `pipelines.generate`: realistic raw exports (SPEC §2) with intended bad records (SPEC §4).

The bad-record test runs an independent reference reading of SPEC §4 over every record written: each
record must get exactly the reason code the generator intended (first applicable code, in SPEC order), and
every other record must pass all eleven checks.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest

from pipelines.generate import KIND_EXT, REASON_CODES, SOURCES, generate

ORDERS = 4000
ITEM_COLUMNS = {"products", "Products", "items", "Metadatas"}
CURRENCIES = {"USD", "EUR", "GBP", "BRL"}
BREVO_STATUSES = {
    "pending",
    "processing",
    "completed",
    "shipped",
    "delivered",
    "cancelled",
    "canceled",
    "refunded",
    "returned",
}
ESPUTNIK_STATUSES = {"INITIALIZED", "IN_PROGRESS", "DELIVERED", "CANCELLED", "ABANDONED_SHOPPING_CART"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    summary = generate(out, ORDERS, seed=42)
    return out, summary


# ------------------------------------------------------------------------------------------------------------
# reading the files back the way an ingester would


def _open_text(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        assert data[:2] == b"\x1f\x8b", f"{path} is not gzip"
        data = gzip.decompress(data)
    return data.decode("utf-8")


def _unflatten(row: dict[str, str]) -> dict:
    """A CSV row back to a nested record: dotted columns, JSON text item lists, empty cell = absent."""
    record: dict = {}
    for column, value in row.items():
        if value == "":
            continue
        if column in ITEM_COLUMNS:
            value = json.loads(value)
        node = record
        *parents, leaf = column.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return record


def read_records(out: Path, summary, source: str):
    """Yield (path, index, record or None when it does not parse, from_csv, raw text) in processing order."""
    for rel in summary.files:
        if not rel.startswith(source + "/"):
            continue
        kind = summary.file_kinds[rel]
        text = _open_text(out / rel)
        if kind.startswith("csv"):
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
            for i, row in enumerate(rows):
                try:
                    yield rel, i, _unflatten(row), True, json.dumps(row)
                except json.JSONDecodeError:
                    yield rel, i, None, True, json.dumps(row)
        elif kind in ("ndjson", "jsonl", "ndjson_gz"):
            for i, line in enumerate(text.splitlines()):
                try:
                    yield rel, i, json.loads(line), False, line
                except json.JSONDecodeError:
                    yield rel, i, None, False, line
        else:
            doc = json.loads(text)  # a whole JSON file must always parse
            if kind == "json_object":
                assert isinstance(doc, dict) and "orders" not in doc
                elements = [doc]
            elif kind.startswith("json_envelope"):
                assert isinstance(doc, dict) and list(doc) == ["orders"]
                elements = doc["orders"]
            else:
                assert isinstance(doc, list)
                elements = doc
            for i, element in enumerate(elements):
                yield rel, i, element, False, json.dumps(element, ensure_ascii=False)


# ------------------------------------------------------------------------------------------------------------
# a reference reading of SPEC §4 (first applicable reason, in order)


def _is_num(value, from_csv: bool) -> bool:
    if from_csv and isinstance(value, str):
        try:
            return Decimal(value).is_finite()
        except InvalidOperation:
            return False
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_bool(value, from_csv: bool) -> bool:
    return value in ("true", "false") if from_csv else isinstance(value, bool)


def _truthy(value) -> bool:
    return value is True or value == "true"


def _ts(value, need_offset: bool = True) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if (parsed.tzinfo is not None or not need_offset) else None


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _get(record: dict, path: str):
    node = record
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _present(value) -> bool:
    return value is not None and value != ""


def is_brevo_update(record: dict) -> bool:
    return not any(k in record for k in ("products", "date", "email", "financial", "revenue"))


def reason_brevo(r: dict, c: bool) -> str | None:
    products = r.get("products") or []
    money = [
        "shipping.cost",
        "revenue",
        *(f"financial.{k}" for k in ("subtotal", "shipping", "tax", "discount", "total")),
    ]
    if is_brevo_update(r):
        times = [_get(r, p) for p in ("delivery.date", "fulfillment.date", "updatedAt")]
        if not _present(r.get("id")) or not _present(r.get("status")) or not any(map(_present, times)):
            return "missing_required_field"
        if any(_present(t) and _ts(t) is None for t in times):
            return "invalid_timestamp"
        if str(r["status"]).lower() not in BREVO_STATUSES:
            return "unknown_status"
        return None  # unknown_order is decided after all files
    if not _present(r.get("id")) or not _present(r.get("date")):
        return "missing_required_field"
    values = [_get(r, p) for p in money] + [p.get("price") for p in products] + [p.get("quantity") for p in products]
    if any(v is not None and not _is_num(v, c) for v in values):
        return "invalid_type"
    if _ts(r["date"]) is None:
        return "invalid_timestamp"
    if not _present(r.get("email")):
        return "missing_contact"
    if _present(r.get("status")) and str(r["status"]).lower() not in BREVO_STATUSES:
        return "unknown_status"
    if any(v is not None and Decimal(str(v)) < 0 for v in [_get(r, p) for p in money] + [p["price"] for p in products]):
        return "negative_amount"
    if not all(_positive_int(p["quantity"]) for p in products):
        return "invalid_quantity"
    if _present(_get(r, "financial.currency")) and _get(r, "financial.currency") not in CURRENCIES:
        return "unknown_currency"
    return None


def reason_bonifiq(r: dict, c: bool) -> str | None:
    required = [
        "OriginalId",
        "OrderPlacementDate",
        "OrderTotal",
        "IsCompleted",
        "IsCancelledOrReturned",
        "Customer.OriginalId",
        "LastUpdate",
    ]
    if not all(_present(_get(r, p)) for p in required):
        return "missing_required_field"
    products = r.get("Products") or []
    if not _is_num(r["OrderTotal"], c) or not all(
        _is_num(p["Price"], c) and _is_num(p["Quantity"], c) for p in products
    ):
        return "invalid_type"
    if not (_is_bool(r["IsCompleted"], c) and _is_bool(r["IsCancelledOrReturned"], c)):
        return "invalid_type"
    dates = [
        r["OrderPlacementDate"],
        r["LastUpdate"],
        r.get("OrderCompletedDate"),
        r.get("OrderCancelledDate"),
    ]
    if any(_present(d) and _ts(d) is None for d in dates):
        return "invalid_timestamp"
    done, cancelled = _truthy(r["IsCompleted"]), _truthy(r["IsCancelledOrReturned"])
    has_done, has_cancel = _present(r.get("OrderCompletedDate")), _present(r.get("OrderCancelledDate"))
    if done != has_done or cancelled != has_cancel or (done and cancelled):
        return "inconsistent_state"
    if Decimal(str(r["OrderTotal"])) < 0 or any(Decimal(str(p["Price"])) < 0 for p in products):
        return "negative_amount"
    if not all(_positive_int(p["Quantity"]) for p in products):
        return "invalid_quantity"
    return None


def reason_esputnik(r: dict, c: bool) -> str | None:
    items = r.get("items") or []
    if not all(_present(r.get(k)) for k in ("externalOrderId", "externalCustomerId", "totalCost", "status", "date")):
        return "missing_required_field"
    if not all(
        _present(i.get(k)) for i in items for k in ("externalItemId", "name", "quantity", "cost", "url", "imageUrl")
    ):
        return "missing_required_field"
    values = [r.get("totalCost"), r.get("shipping"), r.get("discount")] + [i["cost"] for i in items]
    if any(v is not None and not _is_num(v, c) for v in values + [i["quantity"] for i in items]):
        return "invalid_type"
    if _ts(r["date"]) is None:
        return "invalid_timestamp"
    if not _present(r.get("email")) and not _present(r.get("phone")):
        return "missing_contact"
    if r["status"] not in ESPUTNIK_STATUSES:
        return "unknown_status"
    if any(v is not None and Decimal(str(v)) < 0 for v in values):
        return "negative_amount"
    if not all(_positive_int(i["quantity"]) for i in items):
        return "invalid_quantity"
    if _present(r.get("currency")) and r["currency"] not in CURRENCIES:
        return "unknown_currency"
    return None


REASONERS = {"brevo": reason_brevo, "bonifiq": reason_bonifiq, "esputnik": reason_esputnik}


def classify(out: Path, summary) -> dict[tuple[str, str, int], str | None]:
    """(source, path, index) -> reason code per SPEC §4, or None for an accepted record."""
    result: dict[tuple[str, str, int], str | None] = {}
    for source in SOURCES:
        pending_updates = []
        accepted_orders = set()
        for path, index, record, from_csv, _raw in read_records(out, summary, source):
            key = (source, path, index)
            if record is None:
                result[key] = "malformed_json"
                continue
            reason = REASONERS[source](record, from_csv)
            result[key] = reason
            if source == "brevo" and reason is None:
                if is_brevo_update(record):
                    pending_updates.append((key, record["id"]))
                else:
                    accepted_orders.add(record["id"])
        for key, order_id in pending_updates:
            if order_id not in accepted_orders:
                result[key] = "unknown_order"
    return result


# ------------------------------------------------------------------------------------------------------------
# tests


def _digest(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_reason_codes_are_the_schema_codes():
    """Same codes, same order as pipelines.schemas (read without importing pandera)."""
    import ast

    import pipelines

    tree = ast.parse((Path(pipelines.__file__).parent / "schemas.py").read_text(encoding="utf-8"))
    assigned = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "REASON_CODES" for t in node.targets)
    )
    assert list(REASON_CODES) == ast.literal_eval(assigned)


def test_same_arguments_give_identical_bytes_and_another_seed_differs(tmp_path):
    first = generate(tmp_path / "a", 1500, seed=7)
    second = generate(tmp_path / "b", 1500, seed=7)
    third = generate(tmp_path / "c", 1500, seed=8)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert len(a) == len(first.files) > 20
    assert first.bad_records == second.bad_records
    assert first.bad_record_locations == second.bad_record_locations
    shared = set(a) & set(c)
    assert third.files and shared
    assert sum(a[p] != c[p] for p in shared) > 0.9 * len(shared)


def test_every_source_and_every_file_kind_is_written(run):
    out, summary = run
    assert summary.files == sorted(summary.files)
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert on_disk == summary.files
    assert set(summary.file_kinds.values()) == set(KIND_EXT)
    for source in SOURCES:
        kinds = {k for p, k in summary.file_kinds.items() if p.startswith(source + "/")}
        assert {"ndjson", "csv", "ndjson_gz", "csv_gz", "jsonl"} <= kinds, source
    for path, kind in summary.file_kinds.items():
        assert path.endswith("." + KIND_EXT[kind]), path
    # bulk volume goes to ndjson and csv
    bulk = sum((out / p).stat().st_size for p, k in summary.file_kinds.items() if k in ("ndjson", "csv"))
    total = sum((out / p).stat().st_size for p in summary.files)
    assert bulk > 0.6 * total


def test_paths_are_dated_and_sort_chronologically(run):
    out, summary = run
    pattern = re.compile(r"^(brevo|bonifiq|esputnik)/(\d{4})/(\d{4}-\d{2}-\d{2})-(orders|updates)[-.]")
    for path in summary.files:
        m = pattern.match(path)
        assert m, path
        assert m.group(2) == m.group(3)[:4]
        assert summary.start_date <= date.fromisoformat(m.group(3)) <= summary.end_date
    # every record of an order comes after the record that introduced it, in processing order
    for source in SOURCES:
        first_seen: dict[str, tuple[str, int, bool]] = {}
        later = []
        for path, index, record, _c, _raw in read_records(out, summary, source):
            if record is None:
                continue
            oid = record.get({"brevo": "id", "bonifiq": "OriginalId", "esputnik": "externalOrderId"}[source])
            if oid is None:
                continue
            is_intro = not (source == "brevo" and is_brevo_update(record))
            if is_intro and oid not in first_seen:
                first_seen[oid] = (path, index, "-orders" in path)
            else:
                later.append((oid, path, index))
        assert all(intro for _, _, intro in first_seen.values())
        unknown = [oid for oid, _, _ in later if oid not in first_seen]
        expected_unknown = summary.bad_records_by_source[source]["unknown_order"]
        expected_unknown += summary.bad_records_by_source[source]["missing_required_field"] if source == "brevo" else 0
        assert len(unknown) <= expected_unknown
        for oid, path, index in later:
            if oid in first_seen:
                assert (path, index) > first_seen[oid][:2], (source, oid, path)


def test_records_parse_and_bad_records_are_bad_for_exactly_their_reason(run):
    out, summary = run
    found = classify(out, summary)
    assert len(found) == summary.total_records
    for source in SOURCES:
        assert sum(1 for k in found if k[0] == source) == summary.records_per_source[source]
    intended = {(b.source, b.path, b.index): b.reason for b in summary.bad_record_locations}
    bad_found = {k: v for k, v in found.items() if v is not None}
    assert bad_found == intended
    # every SPEC §4 reason at least once, counts as recorded, about 1 % of the records
    assert set(summary.bad_records) == set(REASON_CODES)
    assert all(summary.bad_records[r] >= 1 for r in REASON_CODES)
    assert Counter(intended.values()) == Counter({r: n for r, n in summary.bad_records.items() if n})
    for source in SOURCES:
        by_source = Counter(v for k, v in intended.items() if k[0] == source)
        assert by_source == Counter({r: n for r, n in summary.bad_records_by_source[source].items() if n})
    assert 0.005 <= summary.total_bad_records / summary.total_records <= 0.02
    # malformed records appear both as broken lines and as broken CSV rows
    malformed = [k for k, v in intended.items() if v == "malformed_json"]
    assert any(summary.file_kinds[p].startswith("csv") for _, p, _ in malformed)
    assert any(summary.file_kinds[p].startswith("ndjson") for _, p, _ in malformed)


def _records(out, summary, source, good_only=True):
    bad = {(b.path, b.index) for b in summary.bad_record_locations}
    for path, index, record, from_csv, raw in read_records(out, summary, source):
        if record is not None and (not good_only or (path, index) not in bad):
            yield path, record, from_csv, raw


def test_brevo_shapes_and_money(run):
    out, summary = run
    full, updates = [], []
    for path, r, c, _ in _records(out, summary, "brevo"):
        (updates if is_brevo_update(r) else full).append((path, r, c))
    rich = [r for p, r, c in full if not c and "financial" in r]
    keys = set().union(*(r.keys() for r in rich))
    assert {
        "id",
        "email",
        "customerId",
        "loyaltyId",
        "billing",
        "shipping",
        "products",
        "financial",
        "loyalty",
        "metadata",
        "subscription",
        "date",
        "status",
    } <= keys
    r = rich[0]
    assert set(r["billing"]) == {"name", "phone", "city", "country"}
    assert set(r["shipping"]) == {"cost", "method"}
    assert {
        "subtotal",
        "shipping",
        "tax",
        "discount",
        "total",
        "currency",
        "paymentMethod",
        "paymentStatus",
    } == set(r["financial"])
    assert {
        "pointsEarned",
        "bonusPoints",
        "pointsMultiplier",
        "tierBefore",
        "tierAfter",
        "totalPointsBalance",
    } <= set(r["loyalty"])
    assert {"source", "referrer", "userAgent", "firstPurchase", "returningCustomer"} <= set(r["metadata"])
    product_keys = {
        "id",
        "name",
        "sku",
        "quantity",
        "price",
        "category",
        "brand",
        "loyaltyPointsEarned",
        "loyaltyMultiplier",
    }
    assert all(product_keys <= set(p) and isinstance(p["category"], list) for p in r["products"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", r["date"])
    assert any(
        "subscription" in r and set(r["subscription"]) == {"id", "type", "frequency", "isRecurring"} for r in rich
    )
    assert any(r.get("metadata", {}).get("isReferralOrder") is True for r in rich)
    # the seed's basic form: revenue, no financial block
    assert any("revenue" in r and "financial" not in r for _, r, _ in full)
    # money: subtotal = sum(price x quantity), discount <= subtotal, total adds up, coupon = discount
    coupons = 0
    for _, r, _ in full:
        if "financial" not in r:
            continue
        f = {
            k: Decimal(str(v))
            for k, v in r["financial"].items()
            if k not in ("currency", "paymentMethod", "paymentStatus")
        }
        lines = sum(Decimal(str(p["price"])) * p["quantity"] for p in r["products"])
        assert f["subtotal"] == lines
        assert 0 <= f["discount"] <= f["subtotal"]
        assert f["total"] == f["subtotal"] - f["discount"] + f["shipping"] + f["tax"]
        if "couponUsed" in r["loyalty"]:
            coupons += 1
            assert Decimal(str(r["loyalty"]["couponDiscount"])) == f["discount"]
    assert coupons > 10
    assert {r["financial"]["currency"] for r in rich} == {"USD", "EUR", "GBP"}
    categories = {c for r in rich for p in r["products"] for c in p["category"]}
    assert {"Luxury", "Eco-Friendly"} <= categories
    # status updates: shipped, delivered with a review incentive, cancellations and returns
    statuses = Counter(r["status"] for _, r, _ in updates)
    assert {"Shipped", "Delivered", "Returned"} <= set(statuses) and statuses["Cancelled"] + statuses["Canceled"]
    delivered = [r for _, r, _ in updates if r["status"] == "Delivered" and "loyalty" in r]
    assert delivered and all(set(r["loyalty"]) == {"reviewIncentive", "reviewIncentiveExpiry"} for r in delivered)
    shipped = next(r for _, r, _ in updates if r["status"] == "Shipped")
    assert set(shipped) == {"id", "status", "tracking", "fulfillment"} and "date" in shipped["fulfillment"]


def test_bonifiq_shapes_and_state_rules(run):
    out, summary = run
    records = [r for _, r, _, _ in _records(out, summary, "bonifiq")]
    json_record = next(r for p, r, c, _ in _records(out, summary, "bonifiq") if not c)
    assert list(json_record) == [
        "OriginalId",
        "OrderPlacementDate",
        "OrderCompletedDate",
        "OrderCancelledDate",
        "OrderStatus",
        "IsCompleted",
        "IsCancelledOrReturned",
        "OrderTotal",
        "Customer",
        "Products",
        "Coupon",
        "Metadatas",
        "PaymentMethod",
        "Branch",
        "SalesPerson",
        "LastUpdate",
    ]
    assert {"OriginalId", "Name"} <= set(json_record["Customer"])
    assert all(set(p) == {"OriginalId", "Name", "Quantity", "Price", "Category"} for p in json_record["Products"])
    assert "currency" not in json_record and "Currency" not in json_record
    customer_ids = [r["Customer"]["OriginalId"] for r in records]
    assert any("@" in x for x in customer_ids)
    assert any(re.fullmatch(r"\d{11}", x) for x in customer_ids) and any(
        re.fullmatch(r"\d{14}", x) for x in customer_ids
    )
    assert any(r.get("Coupon") for r in records)
    assert any(m["Key"] == "campaign" for r in records for m in r["Metadatas"])
    # re-sends of one OriginalId: later LastUpdate, pending -> completed -> sometimes cancelled/returned
    by_id = defaultdict(list)
    for r in records:
        by_id[r["OriginalId"]].append(r)
    evolved = 0
    for versions in by_id.values():
        versions = sorted(versions, key=lambda v: v["LastUpdate"])
        states = [(_truthy(v["IsCompleted"]), _truthy(v["IsCancelledOrReturned"])) for v in versions]
        if len(set(states)) > 1:
            evolved += 1
            assert states[0] in ((False, False), (True, False))
        assert all(v["OrderPlacementDate"] <= v["LastUpdate"] for v in versions)
    assert evolved > 50
    assert any(_truthy(r["IsCancelledOrReturned"]) and r["OrderStatus"] == "Devolvido" for r in records)


def test_esputnik_shapes_offsets_and_resends(run):
    out, summary = run
    envelopes = [
        p for p, k in summary.file_kinds.items() if p.startswith("esputnik/") and k.startswith("json_envelope")
    ]
    assert envelopes
    batch = json.loads(_open_text(out / envelopes[0]))
    assert list(batch) == ["orders"] and batch["orders"]
    order = batch["orders"][0]
    assert {
        "externalOrderId",
        "externalCustomerId",
        "totalCost",
        "status",
        "date",
        "firstName",
        "lastName",
        "currency",
        "shipping",
        "discount",
        "deliveryMethod",
        "paymentMethod",
        "deliveryAddress",
        "items",
    } <= set(order)
    assert set(order["items"][0]) == {
        "externalItemId",
        "name",
        "category",
        "quantity",
        "cost",
        "url",
        "imageUrl",
        "description",
    }
    assert isinstance(order["items"][0]["category"], str)
    records = [r for _, r, _, _ in _records(out, summary, "esputnik")]
    offsets = Counter()
    for r in records:
        m = re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}([+-]\d{2}:\d{2})", r["date"])
        assert m, r["date"]
        offsets[m.group(1)] += 1
        assert "email" in r or "phone" in r
        total = Decimal(str(r["totalCost"]))
        lines = sum(Decimal(str(i["cost"])) * i["quantity"] for i in r["items"])
        assert total == lines - Decimal(str(r["discount"])) + Decimal(str(r["shipping"]))
    assert {"+02:00", "+03:00", "-03:00"} <= set(offsets)
    assert {r["currency"] for r in records} == {"USD", "EUR", "GBP"}
    assert any(r["phone"].startswith("380") for r in records if "phone" in r)
    statuses = defaultdict(list)
    for r in records:
        statuses[r["externalOrderId"]].append(r["status"])
    assert any(s == ["ABANDONED_SHOPPING_CART"] for s in statuses.values())
    assert any("DELIVERED" in s and s[-1] == "CANCELLED" for s in statuses.values())  # returns
    assert any(s[:2] == ["INITIALIZED", "CANCELLED"] for s in statuses.values())  # cancelled before delivery
    assert summary.abandoned_carts == sum(1 for s in statuses.values() if set(s) == {"ABANDONED_SHOPPING_CART"})


def test_csv_headers_are_the_dotted_fields(run):
    out, summary = run
    for source, expected in (
        ("brevo", {"billing.city", "financial.total", "products"}),
        ("bonifiq", {"Customer.Email", "Products", "OrderTotal"}),
        ("esputnik", {"items", "totalCost", "externalOrderId"}),
    ):
        path = next(
            p for p, k in summary.file_kinds.items() if p.startswith(source + "/") and k == "csv" and "-orders" in p
        )
        header = next(csv.reader(io.StringIO(_open_text(out / path))))
        assert expected <= set(header), source


def test_people_appear_in_two_sources(run):
    out, summary = run
    brevo_emails = {r["email"].lower() for _, r, _, _ in _records(out, summary, "brevo") if "email" in r}
    esputnik = [r for _, r, _, _ in _records(out, summary, "esputnik")]
    esputnik_emails = {r["email"].lower() for r in esputnik if "email" in r}
    esputnik_phones = {str(r["phone"]) for r in esputnik if "phone" in r}
    bonifiq_phones = {
        re.sub(r"\D", "", r["Customer"]["Phone"])
        for _, r, _, _ in _records(out, summary, "bonifiq")
        if r["Customer"].get("Phone")
    }
    assert len(brevo_emails & esputnik_emails) >= 5
    assert len(esputnik_phones & bonifiq_phones) >= 5
    # some people type their address with capitals: still the same person after normalization
    assert any(e != e.lower() for _, r, _, _ in _records(out, summary, "brevo") if (e := r.get("email")))


def _canonical(value):
    """A record read from JSON or from CSV in one comparable form (CSV cells are text, nulls are absent)."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        return str(Decimal(str(value)).quantize(Decimal("0.01")))
    except InvalidOperation:
        return str(value)


def test_summary_counts_and_exact_duplicates(run):
    out, summary = run
    assert sum(summary.orders_per_source.values()) == ORDERS
    assert all(summary.orders_per_source[s] > 0.2 * ORDERS for s in SOURCES)
    for source, id_key in (("brevo", "id"), ("bonifiq", "OriginalId"), ("esputnik", "externalOrderId")):
        ids = {
            r[id_key] for _, r, _, _ in _records(out, summary, source) if not (source == "brevo" and is_brevo_update(r))
        }
        assert len(ids) == summary.orders_per_source[source]
        same = Counter(json.dumps(_canonical(r), sort_keys=True) for _, r, _, _ in _records(out, summary, source))
        assert sum(n - 1 for n in same.values() if n > 1) == summary.duplicates_per_source[source] > 0
    assert all(summary.updates_per_source[s] > 0 for s in SOURCES)
    # repeat buyers: most people order once or twice, a few many times
    per_email = Counter(
        r["email"].lower() for _, r, _, _ in _records(out, summary, "brevo") if not is_brevo_update(r) and "email" in r
    )
    counts = list(per_email.values())
    assert sum(1 for n in counts if n <= 2) > 0.5 * len(counts)
    assert max(counts) >= 15


def test_refuses_to_overwrite_unless_asked(tmp_path):
    generate(tmp_path, 50, seed=1)
    with pytest.raises(FileExistsError):
        generate(tmp_path, 50, seed=1)
    summary = generate(tmp_path, 60, seed=2, overwrite=True)
    on_disk = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert on_disk == summary.files


def test_tiny_and_empty_runs(tmp_path):
    empty = generate(tmp_path / "none", 0)
    assert empty.files == [] and empty.total_records == 0
    tiny = generate(tmp_path / "tiny", 12, customers=5)
    assert sum(tiny.orders_per_source.values()) == 12
    found = classify(tmp_path / "tiny", tiny)
    assert {k: v for k, v in found.items() if v} == {
        (b.source, b.path, b.index): b.reason for b in tiny.bad_record_locations
    }


@pytest.mark.parametrize("period", ["week", "day"])
def test_other_file_periods(tmp_path, period):
    orders = 1200 if period == "week" else 400
    summary = generate(tmp_path, orders, seed=3, period=period)
    assert summary.period == period
    for path in summary.files:
        day = date.fromisoformat(path.split("/")[2][:10])
        assert summary.start_date <= day <= summary.end_date
        if period == "week" and day != summary.start_date:
            assert day.weekday() == 0
    found = classify(tmp_path, summary)
    assert {k: v for k, v in found.items() if v} == {
        (b.source, b.path, b.index): b.reason for b in summary.bad_record_locations
    }


def test_large_data_sets_are_written_in_parts_that_are_one_shop(tmp_path, monkeypatch):
    import pipelines.generate as generator

    monkeypatch.setattr(generator, "PART_ORDERS", 1000)
    out = tmp_path / "raw"
    summary = generate(out, 2500, seed=5)
    assert summary.orders == 2500 and sum(summary.orders_per_source.values()) == 2500
    assert summary.customers == 625
    parts = {f.rsplit("-part", 1)[1].split(".")[0] if "-part" in f else "0" for f in summary.files}
    assert parts == {"0", "1", "2"}
    assert len(summary.files) == len(set(summary.files)) == len(list(out.rglob("*.*")))
    for source, id_key in (("brevo", "id"), ("bonifiq", "OriginalId"), ("esputnik", "externalOrderId")):
        ids = {
            r[id_key] for _, r, _, _ in _records(out, summary, source) if not (source == "brevo" and is_brevo_update(r))
        }
        assert len(ids) == summary.orders_per_source[source]  # no order id shared by two parts
    # people of different parts are different people: no e-mail or phone in two parts
    part_of: dict[str, set[str]] = {}
    for source in SOURCES:
        for path, record, _, _ in _records(out, summary, source):
            part = path.rsplit("-part", 1)[1].split(".")[0] if "-part" in path else "0"
            for key in ("email", "phone"):
                if record.get(key):
                    part_of.setdefault(str(record[key]).lower(), set()).add(part)
    assert part_of and all(len(parts) == 1 for parts in part_of.values())
