with

points_ledger as (

    select * from {{ source('core', 'points_ledger') }}

),

final as (

    select

        ---------- ids
        entry_id,
        customer_id,
        order_id,

        ---------- strings
        entry_type,
        rule,

        ---------- numerics
        cast(points as bigint) as points,
        cast(balance_after as bigint) as balance_after,

        ---------- timestamps
        cast(effective_at as timestamp) as effective_at

    from points_ledger

)

select * from final
