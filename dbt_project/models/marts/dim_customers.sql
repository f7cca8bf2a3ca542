{#- PII-free: whether a customer can be reached, never how (contact data stays in core.customers). -#}

with

customers as (

    select * from {{ ref('stg_core__customers') }}

),

orders as (

    select * from {{ ref('stg_core__orders') }}

),

customer_rfm as (

    select * from {{ ref('customer_rfm') }}

),

customer_points as (

    select * from {{ ref('stg_core__customer_points') }}

),

customer_lifetime_value as (

    select * from {{ ref('customer_lifetime_value') }}

),

order_summary as (

    select
        customer_id,
        sum(case when status <> 'abandoned' then 1 else 0 end) as orders,
        sum(case when status = 'cancelled' then 1 else 0 end) as cancelled_orders,
        sum(case when status = 'abandoned' then 1 else 0 end) as abandoned_carts

    from orders

    where placed_at < {{ as_of_cutoff() }}

    group by customer_id

),

final as (

    select

        ---------- ids
        customers.customer_id,

        ---------- reachability and origin
        customers.sources,
        -- named without 'email' / 'phone' / 'document' so a PII scan of column names stays meaningful
        customers.has_email as reachable_by_mail,
        customers.has_phone as reachable_by_sms,
        customers.has_document as identified_by_tax_id,
        customers.first_seen_at,

        ---------- orders (up to the end of the as-of date)
        cast(coalesce(order_summary.orders, 0) as integer) as orders,
        cast(coalesce(customer_lifetime_value.orders, 0) as integer) as delivered_orders,
        cast(coalesce(order_summary.cancelled_orders, 0) as integer) as cancelled_orders,
        cast(coalesce(order_summary.abandoned_carts, 0) as integer) as abandoned_carts,
        cast(coalesce(customer_lifetime_value.revenue, 0) as decimal(18, 2)) as revenue,
        customer_lifetime_value.first_order_at,
        customer_lifetime_value.last_order_at,

        ---------- rfm (as of the as-of date; null when no delivered order in the window)
        customer_rfm.rfm_cell,
        customer_rfm.segment as rfm_segment,

        ---------- loyalty
        customer_points.tier,
        customer_points.balance as points_balance,
        coalesce(customer_points.balance < 0, false) as has_negative_balance,
        customer_points.pending_points,
        customer_points.lifetime_earned as lifetime_points_earned,
        customer_points.lifetime_redeemed as lifetime_points_redeemed,
        customer_points.lifetime_expired as lifetime_points_expired,

        ---------- lifetime value (52 weeks)
        customer_lifetime_value.p_alive,
        customer_lifetime_value.clv

    from customers

    left join order_summary on customers.customer_id = order_summary.customer_id

    left join customer_rfm on customers.customer_id = customer_rfm.customer_id

    left join customer_points on customers.customer_id = customer_points.customer_id

    left join customer_lifetime_value on customers.customer_id = customer_lifetime_value.customer_id

)

select * from final
