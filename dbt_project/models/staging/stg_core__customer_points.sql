with

customer_points as (

    select * from {{ source('core', 'customer_points') }}

),

final as (

    select

        ---------- ids
        customer_id,

        ---------- strings
        tier,

        ---------- numerics
        cast(balance as bigint) as balance,
        cast(pending_points as bigint) as pending_points,
        cast(lifetime_earned as bigint) as lifetime_earned,
        cast(lifetime_redeemed as bigint) as lifetime_redeemed,
        cast(lifetime_expired as bigint) as lifetime_expired,
        cast(qualifying_points as bigint) as qualifying_points

    from customer_points

)

select * from final
