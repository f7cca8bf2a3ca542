with

delivered_orders as (

    select * from {{ ref('int_orders_delivered') }}

),

clv_customers as (

    select * from {{ ref('stg_core__clv_customers') }}

),

order_summary as (

    select
        customer_id,
        count(*) as orders,
        sum(net_amount_reporting) as revenue,
        min(placed_at) as first_order_at,
        max(placed_at) as last_order_at

    from delivered_orders

    group by customer_id

),

final as (

    select
        order_summary.customer_id,
        {{ as_of_date() }} as as_of,
        cast(order_summary.orders as integer) as orders,
        cast(order_summary.revenue as decimal(18, 2)) as revenue,
        cast(round(order_summary.revenue / order_summary.orders, 2) as decimal(18, 2)) as aov,
        {{ reporting_currency() }} as reporting_currency,
        order_summary.first_order_at,
        order_summary.last_order_at,
        cast({{ dbt.datediff('cast(order_summary.first_order_at as date)', as_of_date(), 'day') }} as integer)
            as tenure_days,
        cast({{ dbt.datediff('cast(order_summary.last_order_at as date)', as_of_date(), 'day') }} as integer)
            as days_since_last_order,
        clv_customers.frequency_x,
        clv_customers.recency_t_x,
        clv_customers.age_t,
        clv_customers.monetary_value,
        clv_customers.predicted_purchases,
        clv_customers.p_alive,
        clv_customers.expected_avg_spend,
        clv_customers.clv

    from order_summary

    left join clv_customers on order_summary.customer_id = clv_customers.customer_id

)

select * from final
