with

customers_scored as (

    select * from {{ ref('int_customers_scored') }}

),

final as (

    select
        customer_id,
        scored_as_of as as_of,
        last_order_date,
        recency_days,
        frequency,
        monetary,
        r_score,
        f_score,
        m_score,
        rfm_cell,
        segment

    from customers_scored

    where scored_as_of = {{ as_of_date() }}

)

select * from final
