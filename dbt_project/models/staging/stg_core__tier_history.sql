with

tier_history as (

    select * from {{ source('core', 'tier_history') }}

),

final as (

    select

        ---------- ids
        customer_id,

        ---------- strings
        tier_from,
        tier_to,
        reason,

        ---------- timestamps
        cast(changed_at as timestamp) as changed_at

    from tier_history

)

select * from final
