with

reconciliation as (

    select * from {{ ref('stg_core__points_reconciliation') }}

),

orders as (

    select * from {{ ref('stg_core__orders') }}

),

compared as (

    select
        reconciliation.order_id,
        reconciliation.customer_id,
        orders.source,
        orders.status,
        orders.placed_at,
        reconciliation.reported_points_earned,
        reconciliation.computed_points,
        reconciliation.computed_points - reconciliation.reported_points_earned as points_earned_difference,
        reconciliation.reported_points_awarded,
        reconciliation.computed_points + coalesce(reconciliation.computed_bonus, 0) as computed_points_awarded,
        reconciliation.computed_points
        + coalesce(reconciliation.computed_bonus, 0)
        - reconciliation.reported_points_awarded as points_awarded_difference,
        reconciliation.computed_bonus,
        reconciliation.reported_tier_after,
        reconciliation.computed_tier_after,
        lower(trim(reconciliation.computed_tier_after))
        = lower(trim(reconciliation.reported_tier_after)) as tier_after_matches,
        (
            reconciliation.reported_points_earned is not null
            or reconciliation.reported_points_awarded is not null
            or reconciliation.reported_tier_after is not null
        ) as has_reported_figures

    from reconciliation

    left join orders on reconciliation.order_id = orders.order_id

),

final as (

    select
        order_id,
        customer_id,
        source,
        status,
        placed_at,
        reported_points_earned,
        computed_points,
        points_earned_difference,
        reported_points_awarded,
        computed_points_awarded,
        points_awarded_difference,
        computed_bonus,
        reported_tier_after,
        computed_tier_after,
        tier_after_matches,
        has_reported_figures,
        coalesce(points_earned_difference <> 0, false)
        or coalesce(points_awarded_difference <> 0, false)
        or coalesce(not tier_after_matches, false) as has_discrepancy

    from compared

)

select * from final
