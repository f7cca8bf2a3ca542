with

orders as (

    -- first purchases and per-order points are worked out once, in fct_orders
    select * from {{ ref('fct_orders') }}

),

attributed_orders as (

    select
        order_id,
        customer_id,
        status,
        net_amount_reporting,
        is_first_purchase,
        coalesce(nullif(trim(campaign), ''), '(none)') as campaign,
        coalesce(nullif(trim(referrer), ''), '(none)') as referrer,
        points_earned + points_bonus - points_reversed as points_awarded,
        points_redeemed - points_refunded as points_redeemed

    from orders

    where
        status <> 'abandoned'
        and placed_at < {{ as_of_cutoff() }}

),

by_campaign as (

    select
        campaign,
        referrer,
        count(*) as orders,
        sum(case when status = 'delivered' then 1 else 0 end) as delivered_orders,
        sum(case when status = 'cancelled' then 1 else 0 end) as cancelled_orders,
        count(distinct customer_id) as customers,
        sum(case when is_first_purchase then 1 else 0 end) as new_customers,
        sum(case when status = 'delivered' then coalesce(net_amount_reporting, 0) else 0 end) as revenue,
        sum(points_awarded) as points_awarded,
        sum(points_redeemed) as points_redeemed

    from attributed_orders

    group by campaign, referrer

),

final as (

    select
        campaign,
        referrer,
        cast(orders as integer) as orders,
        cast(delivered_orders as integer) as delivered_orders,
        cast(cancelled_orders as integer) as cancelled_orders,
        cast(customers as integer) as customers,
        cast(new_customers as integer) as new_customers,
        cast(revenue as decimal(18, 2)) as revenue,
        cast(round({{ safe_divide('revenue', 'delivered_orders') }}, 2) as decimal(18, 2)) as aov,
        {{ reporting_currency() }} as reporting_currency,
        cast(points_awarded as bigint) as points_awarded,
        cast(points_redeemed as bigint) as points_redeemed

    from by_campaign

)

select * from final
