{#-
    The audit trail without the record's contact fields (e-mail, phone, names, source customer id, document):
    PII stays in core. The item list is left out too; core.order_items has the merged lines.
-#}

with

order_events as (

    select * from {{ source('core', 'order_events') }}

),

final as (

    select

        ---------- ids
        event_id,
        order_id,
        source_order_id,
        run_id,

        ---------- strings
        record_kind,
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
        tracking_number,
        carrier,
        reported_tier_before,
        reported_tier_after,
        source_file,
        record_locator,

        ---------- numerics
        cast(record_index as bigint) as record_index,
        cast(gross_amount as decimal(18, 2)) as gross_amount,
        cast(shipping_amount as decimal(18, 2)) as shipping_amount,
        cast(tax_amount as decimal(18, 2)) as tax_amount,
        cast(discount_amount as decimal(18, 2)) as discount_amount,
        cast(net_amount as decimal(18, 2)) as net_amount,
        cast(coupon_discount as decimal(18, 2)) as coupon_discount,
        cast(reported_points_earned as bigint) as reported_points_earned,
        cast(reported_points_awarded as bigint) as reported_points_awarded,
        cast(reported_points_balance as bigint) as reported_points_balance,

        ---------- booleans
        cast(is_subscription as boolean) as is_subscription,
        cast(is_referral_order as boolean) as is_referral_order,

        ---------- timestamps
        cast(placed_at as timestamp) as placed_at,
        cast(delivered_at as timestamp) as delivered_at,
        cast(cancelled_at as timestamp) as cancelled_at,
        cast(updated_at as timestamp) as updated_at,
        cast(sort_time as timestamp) as sort_time,
        cast(ingested_at as timestamp) as ingested_at

    from order_events

)

select * from final
