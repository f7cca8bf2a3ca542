with

customers_scored as (

    select * from {{ ref('int_customers_scored') }}

),

months as (

    select * from {{ ref('int_months_spined') }}

),

monthly_scores as (

    select
        customers_scored.customer_id,
        months.month_end,
        customers_scored.scored_as_of,
        customers_scored.recency_days,
        customers_scored.frequency,
        customers_scored.monetary,
        customers_scored.r_score,
        customers_scored.f_score,
        customers_scored.m_score,
        customers_scored.rfm_cell,
        customers_scored.segment,
        lag(months.month_end) over (
            partition by customers_scored.customer_id order by months.month_end
        ) as previous_scored_month_end,
        lag(customers_scored.segment) over (
            partition by customers_scored.customer_id order by months.month_end
        ) as previous_scored_segment

    from customers_scored

    inner join months on customers_scored.scored_as_of = months.period_end_date

),

final as (

    select
        customer_id,
        month_end,
        scored_as_of,
        recency_days,
        frequency,
        monetary,
        r_score,
        f_score,
        m_score,
        rfm_cell,
        segment,
        case
            when previous_scored_month_end
                = cast({{ dbt.dateadd('day', -1, dbt.date_trunc('month', 'month_end')) }} as date)
                then previous_scored_segment
        end as previous_segment,
        coalesce(
            previous_scored_month_end
            = cast({{ dbt.dateadd('day', -1, dbt.date_trunc('month', 'month_end')) }} as date)
            and previous_scored_segment <> segment,
            false
        ) as is_segment_change

    from monthly_scores

)

select * from final
