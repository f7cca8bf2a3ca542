"""Customer identity (SPEC §3): identifiers that appear together on any order belong to one customer.

Identifiers are the normalized e-mail, the phone (digits with country code), a source's customer id as
`<source>:<id>` and a document as its salted hash. Each accepted record links the identifiers it carries; the
customers are the connected components of that graph (scipy's sparse connected components: linear time, no
Python loop over records). `customer_id` is an opaque, stable hash of the component's smallest identifier, so
it does not change when the same data is loaded again.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipelines import hashing
from pipelines.schemas import CUSTOMER_COLUMNS, conform


def identifiers(events: pl.DataFrame) -> pl.DataFrame:
    """One row per (event, identifier) it carries: `event_id`, `order_id`, `identifier`."""
    kinds = {
        "email": pl.concat_str(pl.lit("email:"), pl.col("email")),
        "phone": pl.concat_str(pl.lit("phone:"), pl.col("phone")),
        "source_customer_id": pl.concat_str(pl.lit("id:"), pl.col("source"), pl.lit(":"), pl.col("source_customer_id")),
        "document_hash": pl.concat_str(pl.lit("doc:"), pl.col("document_hash")),
    }
    return (
        events.select("event_id", "order_id", pl.concat_list(list(kinds.values())).alias("identifier"))
        .explode("identifier")
        .drop_nulls("identifier")
    )


def resolve(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(order_id → customer_id, identifier → customer_id) from all accepted events."""
    return resolve_pairs(identifiers(events).select("order_id", "identifier"))


def resolve_pairs(ids: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`resolve` from the (order_id, identifier) pairs of the events (repeated pairs change nothing)."""
    nodes = ids.select(pl.col("identifier").unique().sort()).with_row_index("node")
    if nodes.height == 0:
        empty = pl.DataFrame(schema={"order_id": pl.String, "customer_id": pl.String})
        return empty, pl.DataFrame(schema={"identifier": pl.String, "customer_id": pl.String})
    linked = ids.join(nodes, on="identifier")
    # Link every identifier of a record, and every record of an order, to the order's first identifier.
    anchor = linked.group_by("order_id").agg(pl.col("node").min().alias("anchor"))
    edges = linked.join(anchor, on="order_id").select("node", "anchor")
    n = nodes.height
    graph = coo_matrix(
        (np.ones(edges.height, dtype=np.int8), (edges["node"].to_numpy(), edges["anchor"].to_numpy())),
        shape=(n, n),
    )
    _, labels = connected_components(graph, directed=False)
    labelled = nodes.with_columns(pl.Series("component", labels))
    smallest = labelled.group_by("component").agg(pl.col("identifier").min().alias("smallest"))
    smallest = hashing.sha256_column(smallest, pl.col("smallest"), "customer_id", prefix="c_", length=20)
    node_customer = labelled.join(smallest.select("component", "customer_id"), on="component").select(
        "node", "identifier", "customer_id"
    )
    order_customer = (
        anchor.join(node_customer, left_on="anchor", right_on="node").select("order_id", "customer_id").sort("order_id")
    )
    return order_customer, node_customer.select("identifier", "customer_id")


def build_customers(events: pl.DataFrame, order_customer: pl.DataFrame) -> pl.DataFrame:
    """core.customers: contact data of each customer, latest non-null value first seen in processing order."""
    from pipelines.merge import processing_order

    # Lazy from the start: only the columns used below are joined and sorted, not every event column.
    ordered = processing_order(events.lazy().join(order_customer.lazy(), on="order_id", how="inner"))
    customers = ordered.group_by("customer_id").agg(
        *[
            pl.col(c).drop_nulls().last().alias(c)
            for c in ("email", "phone", "first_name", "last_name", "document_hash")
        ],
        pl.col("placed_at").min().alias("first_seen_at"),
        pl.col("ingested_at").min().alias("first_ingested_at"),
        pl.col("source").unique().sort().alias("sources"),
        pl.concat_str(pl.col("source"), pl.lit(":"), pl.col("source_customer_id"))
        .drop_nulls()
        .unique()
        .sort()
        .alias("source_customer_ids"),
    )
    customers = customers.with_columns(
        pl.coalesce("first_seen_at", "first_ingested_at").alias("first_seen_at")
    ).collect()
    return conform(customers.sort("customer_id"), CUSTOMER_COLUMNS)


# The same two steps over the warehouse for millions of events: DuckDB reduces the events to one row per order
# (and one per distinct order and identifier) before anything reaches Python. The results are those of
# `resolve` and `build_customers`: the latest non-null value of a customer in processing order (order_id first,
# then the record order within an order) is the latest of the order with the greatest order_id that has one.
_CONTACTS = ("email", "phone", "first_name", "last_name", "document_hash")
# The columns of core.order_events that `resolve_in_warehouse` reads.
EVENT_COLUMNS = (
    "order_id",
    *_CONTACTS,
    "source",
    "source_customer_id",
    "placed_at",
    "ingested_at",
    "sort_time",
    "source_file",
    "record_index",
)


def resolve_in_warehouse(con, events: str = "core.order_events", buckets: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(order_id → customer_id, core.customers) from the events table `events` of the DuckDB connection `con`.

    Once orders are resolved to customers, the customers are built in `buckets` parts (by a hash of
    customer_id: a customer's orders, and their events, are all in one part), so neither DuckDB's window and
    list aggregates over the events nor the per-order frame in Polars hold every order at once (at 10M orders,
    23M events in one query did not fit DuckDB's 3 GB). The result does not depend on the number of buckets.
    """
    order_customer = _order_customers(con, events)
    if buckets == 1:
        customers = _customers(_latest_contacts(con, events, None), order_customer)
    else:
        part = order_customer.select((pl.col("customer_id").hash() % buckets).alias("part"))["part"]
        parts = [order_customer.filter(part == b) for b in range(buckets)]
        customers = pl.concat([_customers(_latest_contacts(con, events, orders), orders) for orders in parts])
    return order_customer, conform(customers.sort("customer_id"), CUSTOMER_COLUMNS)


def affected_scope(con, touched: str) -> str:
    """The events over which identity must be resolved again when the orders of table `touched` (order_id) got
    new events, given core.orders and core.customers as the last resolution left them. Returns the name of the
    temp table holding those events (the columns `resolve_in_warehouse` reads, `EVENT_COLUMNS`); creates temp
    table `_identity_customers` (customer_id): the customers that resolution may change,
    whose rows in core.customers it replaces.

    They are the customers of the touched orders and of every order carrying one of their identifiers; the
    events are those of these customers' orders and of the touched orders. Any other component of the graph
    has no touched order and shares no identifier with one, so its pairs, hence its customer, id and contacts,
    stay as they are; and an identifier of a non-touched order in scope only links orders of its own (old)
    customer, which are in scope. So resolving these events alone gives every order in scope the customer
    that resolving every event would, and changes nobody else's (tests/test_incremental.py).
    """
    identifier_columns = {
        "email": "email",
        "phone": "phone",
        "document_hash": "document_hash",
        "source_customer_id": "source || ':' || source_customer_id",
    }
    con.execute(
        f"""
        create or replace temp table _identity_touched_ids as
        select {", ".join(f"{sql} as {name}" for name, sql in identifier_columns.items())}
        from core.order_events semi join {touched} using (order_id)
        """
    )
    sharing = "\n            union\n".join(
        f"            select order_id from core.order_events where {sql} in "
        f"(select {name} from _identity_touched_ids where {name} is not null)"
        for name, sql in identifier_columns.items()
    )
    con.execute(
        f"""
        create or replace temp table _identity_customers as
        select distinct customer_id from core.orders
        where customer_id is not null and order_id in (
{sharing}
            union
            select order_id from {touched}
        )
        """
    )
    # The scope's events once, with only the columns identity reads: resolving reads them once per customer
    # bucket and once more for the pairs, and each read of a semi join scanned every event again (10M orders,
    # a day's 4.1M events of scope: 12.1 s of reads against 1.9 s to write them and 7.1 s to read them).
    con.execute(
        f"""
        create or replace temp table _identity_events as
        select {", ".join(EVENT_COLUMNS)} from core.order_events
        semi join (
            select order_id from core.orders where customer_id in (select customer_id from _identity_customers)
            union
            select order_id from {touched}
        ) using (order_id)
        """
    )
    con.execute("drop table _identity_touched_ids")
    return "_identity_events"


def _customers(per_order: pl.DataFrame, order_customer: pl.DataFrame) -> pl.DataFrame:
    """Customers from their orders' latest contacts: the latest non-null of each, by order id (as
    `build_customers` takes them in processing order), first seen, sources and source customer ids."""
    ordered = per_order.lazy().join(order_customer.lazy(), on="order_id", how="inner").sort("order_id")
    customers = ordered.group_by("customer_id").agg(
        *[pl.col(c).drop_nulls().last().alias(c) for c in _CONTACTS],
        pl.col("placed_at").min().alias("first_seen_at"),
        pl.col("ingested_at").min().alias("first_ingested_at"),
        pl.col("sources").list.explode(keep_nulls=False, empty_as_null=False).unique().sort().alias("sources"),
        pl.col("source_customer_ids")
        .list.explode(keep_nulls=False, empty_as_null=False)
        .drop_nulls()
        .unique()
        .sort()
        .alias("source_customer_ids"),
    )
    return customers.with_columns(pl.coalesce("first_seen_at", "first_ingested_at").alias("first_seen_at")).collect()


def _order_customers(con, events: str) -> pl.DataFrame:
    """order_id → customer_id as `resolve_pairs` gives it, with the identifiers numbered in DuckDB: only
    integers and order ids reach Python, not the (order, identifier) pairs as text (some 30M at 10M orders;
    0.75 GiB of that run's peak). Nodes are numbered in identifier order, so a component's smallest identifier
    is the one of its smallest node, and only those are read back as text.
    """
    con.execute(
        f"""
        create or replace temp table _identity_pairs as
        select distinct order_id, identifier from (
            select order_id, unnest([
                'email:' || email, 'phone:' || phone,
                'id:' || source || ':' || source_customer_id, 'doc:' || document_hash
            ]) as identifier
            from {events}
        ) where identifier is not null
        """
    )
    con.execute(
        """
        create or replace temp table _identity_nodes as
        select identifier, row_number() over (order by identifier) - 1 as node
        from (select distinct identifier from _identity_pairs)
        """
    )
    n = con.sql("select count(*) from _identity_nodes").fetchone()[0]
    if n == 0:
        con.execute("drop table _identity_pairs; drop table _identity_nodes")
        return pl.DataFrame(schema={"order_id": pl.String, "customer_id": pl.String})
    # Link every identifier of an order to the order's first identifier (its smallest node).
    con.execute(
        """
        create or replace temp table _identity_linked as
        select p.order_id, n.node, min(n.node) over (partition by p.order_id) as anchor
        from _identity_pairs p join _identity_nodes n using (identifier)
        """
    )
    edges = con.sql("select node, anchor from _identity_linked").fetchnumpy()
    graph = coo_matrix((np.ones(len(edges["node"]), dtype=np.int8), (edges["node"], edges["anchor"])), shape=(n, n))
    del edges
    _, labels = connected_components(graph, directed=False)
    del graph
    components = pl.DataFrame({"component": labels}).with_row_index("node").with_columns(pl.col("node").cast(pl.Int64))
    smallest = components.group_by("component").agg(pl.col("node").min().alias("smallest"))  # noqa: F841
    named = con.sql(
        """
        select s.component, n.identifier
        from smallest s join _identity_nodes n on n.node = s.smallest
        """
    ).pl()
    named = hashing.sha256_column(named, pl.col("identifier"), "customer_id", prefix="c_", length=20)
    anchors = con.sql("select distinct order_id, anchor from _identity_linked").pl()
    con.execute("drop table _identity_pairs; drop table _identity_nodes; drop table _identity_linked")
    return (
        anchors.join(components.rename({"node": "anchor"}), on="anchor")
        .join(named.select("component", "customer_id"), on="component")
        .select("order_id", "customer_id")
        .sort("order_id")
    )


def _latest_contacts(con, events: str, orders: pl.DataFrame | None) -> pl.DataFrame:
    """Per order (of `orders`, or every one): its latest contact of each kind, first placed and ingested time,
    sources."""
    wanted = orders.select("order_id") if orders is not None else None  # noqa: F841 (read by DuckDB)
    only = "semi join wanted using (order_id)" if orders is not None else ""
    latest = ",\n".join(f"arg_max({c}, seq) filter (where {c} is not null) as {c}" for c in _CONTACTS)
    return con.sql(
        f"""
        with numbered as (
            select order_id, {", ".join(_CONTACTS)}, placed_at, ingested_at, source, source_customer_id,
                row_number() over (
                partition by order_id
                order by sort_time asc nulls first, source_file, ingested_at, record_index
            ) as seq
            from {events} {only}
        )
        select order_id,
            {latest},
            min(placed_at) as placed_at,
            min(ingested_at) as ingested_at,
            list(distinct source) as sources,
            list(distinct source || ':' || source_customer_id)
                filter (where source_customer_id is not null) as source_customer_ids
        from numbered
        group by order_id
        """
    ).pl()
