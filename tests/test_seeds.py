"""Golden tests: every JSON example of the vendor documents, with hand-checked canonical rows.

The fixtures under tests/fixtures/seeds are verbatim copies of the examples in the vendors' documents (the
Brevo e-mail address reads "[email protected]" because the documentation page obfuscated it; it is kept as
found). BonifiQ publishes a field list, not an example: its fixtures are built from that list.
"""

from datetime import datetime
from decimal import Decimal

import polars as pl

from tests.helpers import ingest, one, raw_dir_with


def test_brevo_basic_order(tmp_path):
    result, canon = ingest(raw_dir_with(tmp_path, "brevo/01_order_basic.json"))
    assert result.quarantine.height == 0
    order = one(canon.orders, order_id="brevo:ORD-2024-001")
    assert order["source"] == "brevo" and order["source_order_id"] == "ORD-2024-001"
    assert order["status"] == "pending"  # no status given
    assert order["placed_at"] == datetime(2024, 1, 25, 14, 30)
    assert order["currency"] == "USD"  # the rules' default for Brevo
    assert order["gross_amount"] == Decimal("309.97")  # revenue
    # no `financial` block: net = Σ price × quantity = 2 × 149.99
    assert order["net_amount"] == Decimal("299.98")
    assert order["net_amount_reporting"] == Decimal("299.98")
    line = one(canon.order_items, order_id="brevo:ORD-2024-001", line_number=1)
    assert (line["product_id"], line["quantity"], line["unit_price"], line["line_amount"]) == (
        "PROD-123",
        2,
        Decimal("149.99"),
        Decimal("299.98"),
    )
    assert line["categories"] == ["Electronics", "Gadgets"]
    customer = one(canon.customers, customer_id=order["customer_id"])
    assert customer["email"] == "[email protected]"
    assert customer["phone"] == "1234567890"  # '+1234567890' as digits with country code


def test_brevo_order_lifecycle_full_order_then_status_updates(tmp_path):
    raw = raw_dir_with(
        tmp_path, "brevo/02_order_loyalty.json", "brevo/03_update_shipped.json", "brevo/04_update_delivered.json"
    )
    result, canon = ingest(raw)
    assert result.quarantine.height == 0
    assert result.events.height == 3
    order = one(canon.orders, order_id="brevo:ORD-2024-001")
    expected = {
        "status": "delivered",
        "source_status": "Delivered",
        "placed_at": datetime(2024, 1, 25, 14, 30),
        "delivered_at": datetime(2024, 1, 28, 16, 30),  # delivery.date of the Delivered update
        "cancelled_at": None,
        "currency": "USD",
        "gross_amount": Decimal("352.97"),
        "shipping_amount": Decimal("9.99"),
        "tax_amount": Decimal("28.00"),
        "discount_amount": Decimal("35.00"),
        "net_amount": Decimal("314.98"),  # financial.subtotal − financial.discount = 349.98 − 35.00
        "net_amount_reporting": Decimal("314.98"),
        "coupon_code": "SAVE10",
        "coupon_discount": Decimal("35.00"),
        "campaign": "Summer Sale",
        "channel": "Website",
        "referrer": "Google Ads",
        "payment_method": "Credit Card",
        "payment_status": "Completed",
        "loyalty_id": "LYL-2024-001",
        "tracking_number": "TRK123456789",
        "carrier": "UPS",
        "reported_points_earned": 353,
        "reported_points_multiplier": 1.2,
        "reported_tier_before": "Silver",
        "reported_tier_after": "Gold",
        "reported_points_balance": 2853,
        "bonus_points": 50,
        "review_incentive": 25,
        "review_incentive_expiry": "2024-02-28",
        "updated_at": datetime(2024, 1, 28, 16, 30),
        "item_count": 2,
        "event_count": 3,
    }
    assert {k: order[k] for k in expected} == expected
    lines = canon.order_items.filter(pl.col("order_id") == "brevo:ORD-2024-001").sort("line_number")
    assert lines.select(
        "product_id", "sku", "variant", "brand", "quantity", "unit_price", "reported_points", "reported_multiplier"
    ).rows() == [
        ("PROD-123", "SW-PRO-BLK-42", "Black/42mm", "TechBrand", 1, Decimal("299.99"), 300, 1.0),
        ("PROD-456", "WC-FAST-01", None, None, 1, Decimal("49.99"), 50, 1.0),
    ]
    customer = one(canon.customers, customer_id=order["customer_id"])
    assert (customer["first_name"], customer["last_name"]) == ("John", "Doe")
    assert customer["source_customer_ids"] == ["brevo:CUST-12345"]


def test_brevo_status_update_patches_and_never_blanks(tmp_path):
    raw = raw_dir_with(tmp_path, "brevo/02_order_loyalty.json", "brevo/03_update_shipped.json")
    _, canon = ingest(raw)
    order = one(canon.orders, order_id="brevo:ORD-2024-001")
    # Shipped is still pending; the update carried no money, coupon or customer: all kept from the order
    assert order["status"] == "pending" and order["source_status"] == "Shipped"
    assert order["net_amount"] == Decimal("314.98") and order["coupon_code"] == "SAVE10"
    assert order["tracking_number"] == "TRK123456789"
    assert order["delivered_at"] is None


def test_brevo_batch_envelope(tmp_path):
    result, canon = ingest(raw_dir_with(tmp_path, "brevo/05_batch.json"))
    assert result.files.row(0, named=True)["records_read"] == 2
    assert result.events["record_locator"].to_list() == ["index 0", "index 1"]
    rows = canon.orders.sort("order_id").select("order_id", "status", "net_amount", "placed_at").rows()
    # no products, no financial: net = revenue − shipping.cost (absent: 0); the batch has no date
    assert rows == [
        ("brevo:ORD-2024-001", "pending", Decimal("199.99"), None),
        ("brevo:ORD-2024-002", "pending", Decimal("299.99"), None),
    ]
    assert canon.customers.height == 1  # the same e-mail on both orders


def test_esputnik_request_body(tmp_path):
    result, canon = ingest(raw_dir_with(tmp_path, "esputnik/01_request_body.json"))
    assert result.quarantine.height == 0
    order = one(canon.orders, order_id="esputnik:100500")
    expected = {
        "status": "pending",  # INITIALIZED
        "source_status": "INITIALIZED",
        "placed_at": datetime(2017, 3, 8, 7, 30),  # 09:30+02:00 in UTC
        "currency": "USD",
        "gross_amount": Decimal("1000.00"),
        "shipping_amount": Decimal("10.00"),
        "discount_amount": Decimal("0.00"),
        "net_amount": Decimal("990.00"),  # totalCost − shipping
        "payment_method": "cash",
    }
    assert {k: order[k] for k in expected} == expected
    line = one(canon.order_items, order_id="esputnik:100500")
    assert (line["product_id"], line["name"], line["categories"], line["quantity"], line["unit_price"]) == (
        "200600",
        "Super Device",
        ["devices"],
        1,
        Decimal("990.00"),
    )
    customer = one(canon.customers, customer_id=order["customer_id"])
    assert (customer["email"], customer["phone"], customer["first_name"], customer["last_name"]) == (
        "mail@example.com",
        "380942583691",
        "John",
        "Smith",
    )
    assert customer["source_customer_ids"] == ["esputnik:12345"]


def test_bonifiq_completed_order(tmp_path):
    result, canon = ingest(raw_dir_with(tmp_path, "bonifiq/01_completed.json"))
    assert result.quarantine.height == 0
    order = one(canon.orders, order_id="bonifiq:PED-1001")
    expected = {
        "status": "delivered",  # IsCompleted
        "source_status": "Faturado",
        "placed_at": datetime(2024, 3, 5, 11, 45),
        "delivered_at": datetime(2024, 3, 7, 9, 0),
        "currency": "BRL",  # BonifiQ's default currency
        "net_amount": Decimal("120.00"),  # OrderTotal is already net
        "net_amount_reporting": Decimal("21.60"),  # 120.00 × 0.18
        "coupon_code": "BQ-REWARD-10",
        "campaign": "Black Friday",
        "payment_method": "Visa Credit Card",
        "branch": "Loja Paulista",
        "sales_person": "Joana",
    }
    assert {k: order[k] for k in expected} == expected
    assert canon.order_items.filter(pl.col("order_id") == "bonifiq:PED-1001").select(
        "product_id", "quantity", "unit_price", "categories"
    ).sort("product_id").rows() == [
        ("SKU-1", 1, Decimal("100.00"), ["Luxury"]),
        ("SKU-2", 2, Decimal("15.00"), ["Eco-Friendly"]),
    ]
    customer = one(canon.customers, customer_id=order["customer_id"])
    assert customer["email"] == "maria@example.com.br"
    assert customer["phone"] == "5511987654321"


def test_bonifiq_records_ordered_by_last_update_and_document_hashed(tmp_path):
    result, canon = ingest(raw_dir_with(tmp_path, "bonifiq/02_store_document.json"))
    assert result.quarantine.height == 0
    order = one(canon.orders, order_id="bonifiq:LOJA-77")
    # file order: pending, returned, delivered; LastUpdate order: pending, delivered, returned
    assert order["status"] == "cancelled"
    assert order["source_status"] == "Devolvido"
    assert order["delivered_at"] == datetime(2024, 4, 11, 10, 0)
    assert order["cancelled_at"] == datetime(2024, 4, 20, 12, 0)
    assert order["channel"] == "store"
    customer = one(canon.customers, customer_id=order["customer_id"])
    assert customer["email"] is None and customer["source_customer_ids"] == []
    # the CPF is kept only as a salted hash, never in the clear
    assert customer["document_hash"].startswith("d_")
    everything = str(canon.customers.rows()) + str(result.events.rows())
    assert "12345678909" not in everything and "123.456.789-09" not in everything


def test_all_seeds_together_conserve_every_record(tmp_path):
    raw = raw_dir_with(
        tmp_path,
        "brevo/01_order_basic.json",
        "brevo/02_order_loyalty.json",
        "brevo/03_update_shipped.json",
        "brevo/04_update_delivered.json",
        "brevo/05_batch.json",
        "esputnik/01_request_body.json",
        "bonifiq/01_completed.json",
        "bonifiq/02_store_document.json",
    )
    result, canon = ingest(raw)
    files = result.files
    assert (files["records_read"] == files["records_accepted"] + files["records_quarantined"]).all()
    assert files["records_read"].sum() == 11
    assert canon.orders["order_id"].is_unique().all()
    assert sorted(canon.orders["order_id"].to_list()) == [
        "bonifiq:LOJA-77",
        "bonifiq:PED-1001",
        "brevo:ORD-2024-001",
        "brevo:ORD-2024-002",
        "esputnik:100500",
    ]
