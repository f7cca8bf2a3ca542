with

order_items as (

    select * from {{ source('core', 'order_items') }}

),

final as (

    select

        ---------- ids
        order_id,
        cast(line_number as integer) as line_number,
        product_id,
        sku,

        ---------- strings
        name as product_name,
        variant,
        categories,
        brand,

        ---------- numerics
        cast(quantity as bigint) as quantity,
        cast(unit_price as decimal(18, 2)) as unit_price,
        cast(line_amount as decimal(18, 2)) as line_amount,
        cast(reported_points as bigint) as reported_points,
        cast(reported_multiplier as double) as reported_multiplier

    from order_items

)

select * from final
