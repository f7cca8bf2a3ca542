with

orders as (

    select * from {{ ref('stg_core__orders') }}

),

placed_orders as (

    select
        cast(placed_at as date) as order_date,
        source,
        status,
        net_amount_reporting

    from orders

    where placed_at < {{ as_of_cutoff() }}

),

daily as (

    select
        order_date,
        source,
        sum(case when status <> 'abandoned' then 1 else 0 end) as orders,
        sum(case when status = 'delivered' then 1 else 0 end) as delivered,
        sum(case when status = 'cancelled' then 1 else 0 end) as cancelled,
        sum(case when status = 'pending' then 1 else 0 end) as pending,
        sum(case when status = 'abandoned' then 1 else 0 end) as abandoned_carts,
        sum(case when status = 'delivered' then coalesce(net_amount_reporting, 0) else 0 end) as revenue

    from placed_orders

    group by order_date, source

),

final as (

    select
        order_date,
        cast({{ dbt.date_trunc('month', 'order_date') }} as date) as order_month,
        source,
        cast(orders as integer) as orders,
        cast(delivered as integer) as delivered,
        cast(cancelled as integer) as cancelled,
        cast(pending as integer) as pending,
        cast(abandoned_carts as integer) as abandoned_carts,
        cast(revenue as decimal(18, 2)) as revenue,
        cast(round({{ safe_divide('revenue', 'delivered') }}, 2) as decimal(18, 2)) as aov,
        {{ reporting_currency() }} as reporting_currency

    from daily

)

select * from final
