"""The canonical tables derived from every accepted event: orders, their lines, and customers.

Derived tables are rebuilt whole from `core.order_events` (the append-only record of what arrived), so a
re-run, a re-sent record or a late status update can never leave them out of step with the events.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipelines.identity import build_customers, resolve
from pipelines.merge import merge_orders
from pipelines.rules import Rules
from pipelines.schemas import ORDER_COLUMNS, Customers, OrderItems, Orders, conform


@dataclass
class Canonical:
    orders: pl.DataFrame
    order_items: pl.DataFrame
    customers: pl.DataFrame


def build_canonical(events: pl.DataFrame, rules: Rules) -> Canonical:
    orders, items = merge_orders(events, rules)
    return with_customers(events, orders, items)


def with_customers(events: pl.DataFrame, orders: pl.DataFrame, items: pl.DataFrame) -> Canonical:
    """Merged orders and lines with each order's customer (identity resolution) and the customers table."""
    order_customer, _ = resolve(events)
    orders = conform(orders.drop("customer_id").join(order_customer, on="order_id", how="left"), ORDER_COLUMNS)
    customers = build_customers(events, order_customer)
    Orders.validate(orders, lazy=True)
    OrderItems.validate(items, lazy=True)
    Customers.validate(customers, lazy=True)
    return Canonical(orders=orders, order_items=items, customers=customers)
