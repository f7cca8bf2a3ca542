{#-
    The orders RFM and lifetime value count (SPEC §6): status `delivered` (a cancel after delivery is a return,
    and its order is `cancelled`, so excluded), placed up to the end of the as-of date.

    `customer_key` names the customer by their first order (earliest placed, then smallest order id, over all
    their orders). customer_id is a hash of the customer's smallest identifier (SPEC §3), so a new e-mail can
    relabel a customer whose orders stay the same; their key stays. The incremental RFM scoring fingerprints
    its windows by key, so such a relabel re-scores nothing (`int_customers_scored` only renames the rows).
-#}

with

orders as (

    select * from {{ ref('stg_core__orders') }}

),

customer_keys as (

    select
        customer_id,
        first(order_id order by placed_at nulls last, order_id) as customer_key

    from orders

    group by customer_id

),

final as (

    select

        ---------- ids
        orders.order_id,
        orders.customer_id,
        customer_keys.customer_key,

        ---------- strings
        orders.source,

        ---------- numerics
        coalesce(orders.net_amount_reporting, 0) as net_amount_reporting,

        ---------- dates and timestamps
        cast(orders.placed_at as date) as placed_date,
        orders.placed_at,
        orders.delivered_at

    from orders

    left join customer_keys on orders.customer_id = customer_keys.customer_id

    where
        orders.status = 'delivered'
        and orders.placed_at < {{ as_of_cutoff() }}

)

select * from final
