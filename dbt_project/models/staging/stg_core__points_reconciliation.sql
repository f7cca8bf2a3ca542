with

points_reconciliation as (

    select * from {{ source('core', 'points_reconciliation') }}

),

final as (

    select

        ---------- ids
        order_id,
        customer_id,

        ---------- strings
        computed_tier_after,
        reported_tier_after,

        ---------- numerics
        cast(computed_points as bigint) as computed_points,
        cast(computed_bonus as bigint) as computed_bonus,
        cast(reported_points_earned as bigint) as reported_points_earned,
        cast(reported_points_awarded as bigint) as reported_points_awarded

    from points_reconciliation

)

select * from final
