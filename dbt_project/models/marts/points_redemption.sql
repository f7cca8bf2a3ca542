with

member_months as (

    select * from {{ ref('int_customer_months_tiered') }}

),

by_tier as (

    select
        month,
        tier,
        count(*) as members,
        sum(earned) as earned,
        sum(bonus) as bonus,
        sum(redeemed) as redeemed,
        sum(refunded) as refunded,
        sum(reversed) as reversed,
        sum(expired) as expired,
        sum(adjusted) as adjusted,
        sum(net_points) as net_points,
        sum(case when balance > 0 then balance else 0 end) as outstanding_points,
        sum(case when balance < 0 then 1 else 0 end) as negative_balance_members,
        -sum(case when balance < 0 then balance else 0 end) as negative_balance_points

    from member_months

    group by month, tier

),

final as (

    select
        month,
        tier,
        cast(members as integer) as members,
        cast(earned as bigint) as earned,
        cast(bonus as bigint) as bonus,
        cast(redeemed as bigint) as redeemed,
        cast(refunded as bigint) as refunded,
        cast(reversed as bigint) as reversed,
        cast(expired as bigint) as expired,
        cast(adjusted as bigint) as adjusted,
        cast(net_points as bigint) as net_points,
        {{ safe_divide('redeemed', 'earned') }} as redemption_rate,
        {{ safe_divide('expired', 'earned') }} as breakage,
        cast(outstanding_points as bigint) as outstanding_points,
        cast(round(outstanding_points / {{ redeem_points_per_unit() }}, 2) as decimal(18, 2)) as liability,
        {{ reporting_currency() }} as reporting_currency,
        cast(negative_balance_members as integer) as negative_balance_members,
        cast(negative_balance_points as bigint) as negative_balance_points

    from by_tier

)

select * from final
