"""The points ledger, balances, tiers and reconciliation (SPEC §5), with the invariants of §5.6 as checks."""

import dagster as dg

from pipelines import runs
from pipelines.defs.ingest import ORDER_ITEMS, ORDERS, TRANSIENT_RETRY
from pipelines.defs.resources import LoyaltySettings

POINTS_LEDGER = dg.AssetKey(["core", "points_ledger"])
CUSTOMER_POINTS = dg.AssetKey(["core", "customer_points"])
TIER_HISTORY = dg.AssetKey(["core", "tier_history"])
RECONCILIATION = dg.AssetKey(["core", "points_reconciliation"])
UNPRICED = dg.AssetKey(["core", "unpriced_redemptions"])

_KINDS = {"polars", "duckdb"}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            POINTS_LEDGER,
            deps=[ORDERS, ORDER_ITEMS],
            kinds=_KINDS,
            description="One row per points entry: earn, bonus, redeem, reversal, expire, adjust.",
        ),
        dg.AssetSpec(
            CUSTOMER_POINTS,
            deps=[ORDERS, ORDER_ITEMS],
            kinds=_KINDS,
            description="One row per customer: balance, pending points, lifetime totals, tier.",
        ),
        dg.AssetSpec(
            TIER_HISTORY, deps=[ORDERS, ORDER_ITEMS], kinds=_KINDS, description="One row per tier change of a customer."
        ),
        dg.AssetSpec(
            RECONCILIATION,
            deps=[ORDERS, ORDER_ITEMS],
            kinds=_KINDS,
            description="One row per order: source-reported against computed points and tier.",
        ),
        dg.AssetSpec(
            UNPRICED,
            deps=[ORDERS, ORDER_ITEMS],
            kinds=_KINDS,
            description="One row per coupon redemption with no value and no catalogue price.",
        ),
    ],
    group_name="ledger",
    retry_policy=TRANSIENT_RETRY,
)
def points_ledger(context: dg.AssetExecutionContext, settings: LoyaltySettings):
    """The points ledger as a pure function of the canonical orders, the rules and the as-of date."""
    report = runs.compute_points(settings.resolved(), settings.load_rules())
    context.log.info(
        f"{report.entries} entries {report.entries_by_type}; tiers {report.tiers}; "
        f"{report.mode}: {report.customers_computed} of {report.customers} customers computed"
    )
    yield dg.MaterializeResult(
        asset_key=POINTS_LEDGER,
        metadata={
            "entries": report.entries,
            "by_type": dg.MetadataValue.json(report.entries_by_type),
            "mode": report.mode,
            "customers_computed": report.customers_computed,
        },
    )
    yield dg.MaterializeResult(
        asset_key=CUSTOMER_POINTS,
        metadata={"customers": report.customers, "tiers": dg.MetadataValue.json(report.tiers)},
    )
    yield dg.MaterializeResult(asset_key=TIER_HISTORY)
    yield dg.MaterializeResult(asset_key=RECONCILIATION)
    yield dg.MaterializeResult(asset_key=UNPRICED, metadata={"redemptions": report.unpriced_redemptions})


@dg.asset_check(asset=CUSTOMER_POINTS, blocking=True, description="Every balance equals the sum of its entries.")
def balance_is_sum_of_entries(settings: LoyaltySettings) -> dg.AssetCheckResult:
    bad = settings.scalar(
        """
        select count(*) from core.customer_points c
        full join (select customer_id, sum(points) as total from core.points_ledger group by 1) l using (customer_id)
        where coalesce(c.balance, 0) <> coalesce(l.total, 0)""",
    )
    return dg.AssetCheckResult(passed=bad == 0, metadata={"customers_out_of_balance": bad})


@dg.asset_check(
    asset=POINTS_LEDGER,
    blocking=True,
    description="Every delivered, non-cancelled order past its pending period has exactly one earn.",
)
def one_earn_per_eligible_order(settings: LoyaltySettings) -> dg.AssetCheckResult:
    resolved = settings.resolved()
    rules = settings.load_rules()
    bad = settings.scalar(
        f"""
        with eligible as (
            select order_id from core.orders
            where status = 'delivered' and customer_id is not null
              and delivered_at + interval {int(rules.earn.pending_days)} day
                  <= timestamp '{resolved.as_of.isoformat()} 23:59:59.999999'
        ),
        earns as (select order_id, count(*) as n from core.points_ledger where entry_type = 'earn' group by 1)
        select count(*) from eligible left join earns using (order_id) where coalesce(n, 0) <> 1""",
    )
    return dg.AssetCheckResult(passed=bad == 0, metadata={"orders_without_exactly_one_earn": bad})


@dg.asset_check(asset=POINTS_LEDGER, blocking=True, description="Every cancelled order's entries net to zero.")
def cancelled_orders_net_to_zero(settings: LoyaltySettings) -> dg.AssetCheckResult:
    resolved = settings.resolved()
    bad = settings.scalar(
        f"""
        select count(*) from (
            select l.order_id from core.points_ledger l join core.orders o using (order_id)
            where o.status = 'cancelled' and o.cancelled_at <= timestamp '{resolved.as_of.isoformat()} 23:59:59.999999'
              and l.entry_type in ('earn', 'bonus', 'redeem', 'reversal')
            group by 1 having sum(l.points) <> 0)""",
    )
    return dg.AssetCheckResult(passed=bad == 0, metadata={"cancelled_orders_not_netting_to_zero": bad})


@dg.asset_check(
    asset=POINTS_LEDGER,
    blocking=True,
    description="No lot is consumed twice: entry ids are unique and nothing expires more than it earned.",
)
def no_lot_consumed_twice(settings: LoyaltySettings) -> dg.AssetCheckResult:
    duplicates = settings.scalar("select count(*) - count(distinct entry_id) from core.points_ledger")
    over_expired = settings.scalar(
        """
        select count(*) from (
            select customer_id,
                   sum(points) filter (where points > 0) as lots,
                   -sum(points) filter (where entry_type = 'expire') as expired
            from core.points_ledger group by 1)
        where coalesce(expired, 0) > coalesce(lots, 0)""",
    )
    return dg.AssetCheckResult(
        passed=duplicates == 0 and over_expired == 0,
        metadata={"duplicate_entry_ids": duplicates, "customers_over_expired": over_expired},
    )


assets = [points_ledger]
asset_checks = [
    balance_is_sum_of_entries,
    one_earn_per_eligible_order,
    cancelled_orders_net_to_zero,
    no_lot_consumed_twice,
]
