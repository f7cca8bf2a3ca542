{#-
    The query of int_points_pivoted_to_orders (see there): the points entries up to the end of the as-of date,
    pivoted by entry type, one row per order. `only_orders`: a table of the order_ids to pivot (fct_orders'
    incremental build), filtered before the aggregation.
-#}
{% macro pivot_points_to_orders(only_orders=none) -%}

with

points_ledger as (

    select * from {{ ref('stg_core__points_ledger') }}

),

final as (

    select
        order_id,
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
        {%- if only_orders %}
        and order_id in (select order_id from {{ only_orders }})
        {%- endif %}

    group by order_id

)

select * from final
{%- endmacro %}
