with

member_months as (

    select * from {{ ref('int_customer_months_tiered') }}

),

moves as (

    select
        month,
        tier_from,
        tier,
        is_new_member,
        case
            when {{ tier_rank('tier') }} > {{ tier_rank('tier_from') }} then 'upgrade'
            when {{ tier_rank('tier') }} < {{ tier_rank('tier_from') }} then 'downgrade'
            when tier = tier_from then 'retained'
        end as movement

    from member_months

),

final as (

    select
        month,
        tier_from,
        tier as tier_to,
        movement,
        cast(count(*) as integer) as customers,
        cast(sum(case when is_new_member then 1 else 0 end) as integer) as new_members,
        cast(case when movement = 'upgrade' then count(*) else 0 end as integer) as upgrades,
        cast(case when movement = 'downgrade' then count(*) else 0 end as integer) as downgrades,
        cast(case when movement = 'retained' then count(*) else 0 end as integer) as retained

    from moves

    group by month, tier_from, tier, movement

)

select * from final
