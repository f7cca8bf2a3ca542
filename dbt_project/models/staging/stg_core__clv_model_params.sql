with

clv_model_params as (

    select * from {{ source('core', 'clv_model_params') }}

),

final as (

    select

        ---------- ids
        model,
        parameter,

        ---------- numerics
        cast(value as double) as value,
        cast(customers_used as bigint) as customers_used,
        cast(log_likelihood as double) as log_likelihood,

        ---------- booleans
        cast(converged as boolean) as converged,

        ---------- dates
        cast(as_of as date) as as_of

    from clv_model_params

)

select * from final
