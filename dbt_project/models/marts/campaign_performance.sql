with

orders as (

    select * from {{ ref('stg_core__orders') }}

),

delivered_orders as (

    select * from {{ ref('int_orders_delivered') }}

),

order_points as (

    select * from {{ ref('int_points_pivoted_to_orders') }}

),

first_purchases as (

    select
        order_id,
        row_number() over (partition by customer_id order by placed_at, order_id) as purchase_number

    from delivered_orders

),

attributed_orders as (

    select
        orders.order_id,
        orders.customer_id,
        orders.status,
        orders.net_amount_reporting,
        coalesce(nullif(trim(orders.campaign), ''), '(none)') as campaign,
        coalesce(nullif(trim(orders.referrer), ''), '(none)') as referrer,
        coalesce(first_purchases.purchase_number = 1, false) as is_first_purchase,
        coalesce(order_points.points_earned, 0)
        + coalesce(order_points.points_bonus, 0)
        - coalesce(order_points.points_reversed, 0) as points_awarded,
        coalesce(order_points.points_redeemed, 0) - coalesce(order_points.points_refunded, 0) as points_redeemed

    from orders

    left join first_purchases on orders.order_id = first_purchases.order_id

    left join order_points on orders.order_id = order_points.order_id

    where
        orders.status <> 'abandoned'
        and orders.placed_at < {{ as_of_cutoff() }}

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
