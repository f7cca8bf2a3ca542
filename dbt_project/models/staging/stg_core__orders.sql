with

orders as (

    select * from {{ source('core', 'orders') }}

),

final as (

    select

        ---------- ids
        order_id,
        source_order_id,
        customer_id,
        subscription_id,

        ---------- strings
        source,
        status,
        source_status,
        currency,
        coupon_code,
        campaign,
        channel,
        referrer,
        payment_method,
        payment_status,
        branch,
        sales_person,
        tracking_number,
        carrier,
        reported_tier_before,
        reported_tier_after,
        review_incentive_expiry,
        source_file,

        ---------- numerics
        cast(gross_amount as decimal(18, 2)) as gross_amount,
        cast(shipping_amount as decimal(18, 2)) as shipping_amount,
        cast(tax_amount as decimal(18, 2)) as tax_amount,
        cast(discount_amount as decimal(18, 2)) as discount_amount,
        cast(net_amount as decimal(18, 2)) as net_amount,
        cast(net_amount_reporting as decimal(18, 2)) as net_amount_reporting,
        cast(coupon_discount as decimal(18, 2)) as coupon_discount,
        cast(item_count as bigint) as item_count,
        cast(event_count as bigint) as event_count,
        cast(reported_points_earned as bigint) as reported_points_earned,
        cast(reported_points_awarded as bigint) as reported_points_awarded,
        cast(reported_points_multiplier as double) as reported_points_multiplier,
        cast(reported_points_balance as bigint) as reported_points_balance,
        cast(birthday_bonus as bigint) as birthday_bonus_points,
        cast(referral_bonus as bigint) as referral_bonus_points,
        cast(subscription_bonus as bigint) as subscription_bonus_points,
        cast(bonus_points as bigint) as bonus_points,
        cast(review_incentive as bigint) as review_incentive_points,

        ---------- booleans
        cast(is_subscription as boolean) as is_subscription,
        cast(is_referral_order as boolean) as is_referral_order,

        ---------- timestamps
        cast(placed_at as timestamp) as placed_at,
        cast(delivered_at as timestamp) as delivered_at,
        cast(cancelled_at as timestamp) as cancelled_at,
        cast(updated_at as timestamp) as updated_at

    from orders

)

select * from final
