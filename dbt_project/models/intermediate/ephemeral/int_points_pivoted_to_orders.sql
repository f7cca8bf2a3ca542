{#-
    One row per order with points entries up to the end of the as-of date: the ledger pivoted by entry type,
    as positive numbers of points (see int_customer_months_tiered for the sign conventions). Expiries are on
    the order whose lot expired. Entries without an order (`adjust`) are left out.

    Ephemeral: `fct_orders`, its only reader, takes it as a CTE. As a table it was written whole on every build
    (10M orders, a daily build: 10.3 s for its 9M rows, and 2.3 s more for its uniqueness test), for one join;
    one row per order follows from the `group by`, and `fct_orders` tests its own order_id. The query is the
    macro `pivot_points_to_orders`, which an incremental build of `fct_orders` calls for its orders alone.
-#}

{{ pivot_points_to_orders() }}
