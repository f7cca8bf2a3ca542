with

clv_model_params as (

    select * from {{ ref('stg_core__clv_model_params') }}

),

final as (

    select
        model,
        parameter,
        value,
        customers_used,
        log_likelihood,
        converged,
        as_of

    from clv_model_params

)

select * from final
