{#-
    The orders RFM and lifetime value count (SPEC §6): status `delivered` (a cancel after delivery is a return,
    and its order is `cancelled`, so excluded), placed up to the end of the as-of date.
-#}

with

orders as (

    select * from {{ ref('stg_core__orders') }}

),

final as (

    select

        ---------- ids
        order_id,
        customer_id,

        ---------- strings
        source,

        ---------- numerics
        coalesce(net_amount_reporting, 0) as net_amount_reporting,

        ---------- dates and timestamps
        cast(placed_at as date) as placed_date,
        placed_at,
        delivered_at

    from orders

    where
        status = 'delivered'
        and placed_at < {{ as_of_cutoff() }}

)

select * from final
