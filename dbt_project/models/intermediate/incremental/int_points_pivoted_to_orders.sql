{#-
    One row per order with points entries up to the end of the as-of date: the ledger pivoted by entry type,
    as positive numbers of points (see int_customer_months_tiered for the sign conventions). Expiries are on
    the order whose lot expired. Entries without an order (`adjust`) are left out.

    Incremental by customer: a build computes again only the rows of the customers whose orders or ledger
    changed since the last one (macros/changed_customers.sql); the table is what a full build makes.
    `customer_id` is the customer whose ledger holds the entries (the order's).
-#}

{{ config(
    incremental_strategy='append',
    on_schema_change='sync_all_columns',
    tags=['by_changed_customers'],
    pre_hook=["{{ prepare_changed_customers() }}"],
    post_hook=["{{ record_changes_built() }}"],
) }}


with

points_ledger as (

    select * from {{ ref('stg_core__points_ledger') }}

    {{ where_customer_changed('customer_id') }}

),

final as (

    select
        order_id,
        customer_id,
        cast(sum(case when entry_type = 'earn' then points else 0 end) as bigint) as points_earned,
        cast(sum(case when entry_type = 'bonus' then points else 0 end) as bigint) as points_bonus,
        cast(-sum(case when entry_type = 'redeem' then points else 0 end) as bigint) as points_redeemed,
        cast(
            -sum(case when entry_type = 'reversal' and points < 0 then points else 0 end) as bigint
        ) as points_reversed,
        cast(
            sum(case when entry_type = 'reversal' and points > 0 then points else 0 end) as bigint
        ) as points_refunded,
        cast(-sum(case when entry_type = 'expire' then points else 0 end) as bigint) as points_expired,
        cast(sum(points) as bigint) as net_points

    from points_ledger

    where
        order_id is not null
        and effective_at < {{ as_of_cutoff() }}

    group by order_id, customer_id

)

select * from final
