with

clv_customers as (

    select * from {{ source('core', 'clv_customers') }}

),

final as (

    select

        ---------- ids
        customer_id,

        ---------- numerics
        cast(frequency_x as bigint) as frequency_x,
        cast(recency_t_x as double) as recency_t_x,
        cast(age_t as double) as age_t,
        cast(monetary_value as double) as monetary_value,
        cast(predicted_purchases as double) as predicted_purchases,
        cast(p_alive as double) as p_alive,
        cast(expected_avg_spend as double) as expected_avg_spend,
        cast(clv as double) as clv

    from clv_customers

)

select * from final
