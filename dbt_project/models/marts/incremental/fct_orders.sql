{#-
    Sales person, tracking number and the raw loyalty id are left out: a sales person is a person's name,
    and the others identify a parcel or an account, not an analysis dimension.

    Incremental: a build computes again the orders whose row can have changed since the last one, and writes
    those whose row did change (macros/incremental_by_customer.sql); the table is what a full build makes.
-#}

{{ config(
    incremental_strategy='delete+insert',
    unique_key='order_id',
    pre_hook=[
        "{{ drop_retired_table('intermediate', 'int_points_pivoted_to_orders') }}",
        "{{ prepare_by_customer(fct_orders_code_fingerprint(), as_of_window=true) }}",
    ],
    post_hook=["{{ record_by_customer_built(fct_orders_code_fingerprint()) }}"],
) }}

-- depends_on: {{ ref('stg_core__points_ledger') }}
{%- set kept = by_customer_kept(fct_orders_code_fingerprint()) %}

with

orders as (

    select * from {{ ref('stg_core__orders') }}

    {% if kept -%}
    where order_id in (select order_id from fct_orders__orders_now)
    {%- endif %}

),

delivered_orders as (

    select * from {{ ref('int_orders_delivered') }}

    {% if kept -%}
    where customer_id in (select customer_id from fct_orders__customers_now)
    {%- endif %}

),

order_points as (

    {% if kept -%}
    {#- the orders' entries alone, before the pivot's aggregation -#}
    {{ pivot_points_to_orders(only_orders='fct_orders__orders_now') }}
    {%- else -%}
    select * from {{ ref('int_points_pivoted_to_orders') }}
    {%- endif %}

),

first_purchases as (

    {#- each customer's first delivered order (earliest placed, then smallest id): an aggregate, not a
        row_number over every delivered order, which sorted all of them #}
    select arg_min(order_id, (placed_at, order_id)) as order_id

    from delivered_orders

    group by customer_id

),

final as (

    select

        ---------- ids
        orders.order_id,
        orders.customer_id,
        orders.source,
        orders.source_order_id,

        ---------- status
        orders.status,
        orders.source_status,
        orders.status = 'delivered' as is_delivered,
        orders.status = 'cancelled' and orders.delivered_at is not null as is_return,
        first_purchases.order_id is not null as is_first_purchase,

        ---------- dates and timestamps
        cast(orders.placed_at as date) as order_date,
        orders.placed_at,
        orders.delivered_at,
        orders.cancelled_at,
        orders.updated_at,

        ---------- money
        orders.currency,
        orders.gross_amount,
        orders.shipping_amount,
        orders.tax_amount,
        orders.discount_amount,
        orders.net_amount,
        orders.net_amount_reporting,
        {{ reporting_currency() }} as reporting_currency,
        orders.coupon_code,
        orders.coupon_discount,

        ---------- attribution
        orders.campaign,
        orders.referrer,
        orders.channel,
        orders.payment_method,
        orders.branch,
        orders.is_subscription,
        orders.subscription_id,
        orders.is_referral_order,
        cast(orders.item_count as integer) as item_count,

        ---------- points (ledger, up to the end of the as-of date)
        coalesce(order_points.points_earned, 0) as points_earned,
        coalesce(order_points.points_bonus, 0) as points_bonus,
        coalesce(order_points.points_redeemed, 0) as points_redeemed,
        coalesce(order_points.points_reversed, 0) as points_reversed,
        coalesce(order_points.points_refunded, 0) as points_refunded,
        coalesce(order_points.points_expired, 0) as points_expired

    from orders

    left join first_purchases on orders.order_id = first_purchases.order_id

    left join order_points on orders.order_id = order_points.order_id

)

{% if kept -%}
{{ by_customer_rows_that_differ('final') }}
{%- else -%}
select * from final
{%- endif %}
