{#-
    The RFM scores of int_customers_scored at each month end (its period_end_date: the last day, or the as-of
    date within the as-of month), with the segment of the month before: a customer's row for a month is a
    migration when they were scored at the previous month end in another segment.

    Incremental by month: a month's rows depend only on the scores of its scoring date and of the previous month
    end, so each month has a fingerprint (`rfm_history_month_fingerprints`: the scoring fingerprints of those two
    dates in int_customers_scored, with this model's code). A build keeps the months whose fingerprint it
    recorded last time (macros/incremental_fingerprints.sql) and computes the others (a daily run: the as-of month and the months whose windows hold
    a changed order). Before that, the rows kept take the customer_id their customer has now (identity may
    relabel a customer; int_customers_scored renames rather than re-scores them). What was built is recorded
    in two tables beside the model (`intermediate.rfm_history__months`, `intermediate.rfm_history__customers`),
    in the same transaction; without them, the table is emptied and built whole. The table is then what a
    full build makes.
-#}

{{ config(
    incremental_strategy='append',
    pre_hook=["{{ prepare_rfm_history() }}", "{{ relabel_rfm_history() }}"],
    post_hook=["{{ record_rfm_history_built() }}"],
) }}

with

months as (

    select * from {{ ref('int_months_spined') }}

),

months_to_build as (

    select
        month_end,
        period_end_date,
        cast({{ dbt.dateadd('day', -1, dbt.date_trunc('month', 'month_end')) }} as date) as previous_month_end

    from months

    {% if rfm_history_kept() -%}
    where month_end not in ({{ rfm_history_months_kept() }})
    {%- endif %}

),

-- the scores of the months to build and of the month ends before them (read once, only those dates)
customers_scored as (

    select * from {{ ref('int_customers_scored') }}

    where
        scored_as_of in (select period_end_date from months_to_build)
        or scored_as_of in (select previous_month_end from months_to_build)

),

monthly_scores as (

    select
        customers_scored.customer_id,
        months_to_build.month_end,
        months_to_build.previous_month_end,
        customers_scored.scored_as_of,
        customers_scored.recency_days,
        customers_scored.frequency,
        customers_scored.monetary,
        customers_scored.r_score,
        customers_scored.f_score,
        customers_scored.m_score,
        customers_scored.rfm_cell,
        customers_scored.segment

    from customers_scored

    inner join months_to_build on customers_scored.scored_as_of = months_to_build.period_end_date

),

-- the scores at the end of the month before (never the as-of month, so scored as of its last day)
previous_scores as (

    select
        customer_id,
        scored_as_of,
        segment

    from customers_scored

    where scored_as_of in (select previous_month_end from months_to_build)

),

final as (

    select
        monthly_scores.customer_id,
        monthly_scores.month_end,
        monthly_scores.scored_as_of,
        monthly_scores.recency_days,
        monthly_scores.frequency,
        monthly_scores.monetary,
        monthly_scores.r_score,
        monthly_scores.f_score,
        monthly_scores.m_score,
        monthly_scores.rfm_cell,
        monthly_scores.segment,
        previous_scores.segment as previous_segment,
        coalesce(previous_scores.segment <> monthly_scores.segment, false) as is_segment_change

    from monthly_scores

    left join previous_scores
        on
            monthly_scores.customer_id = previous_scores.customer_id
            and monthly_scores.previous_month_end = previous_scores.scored_as_of

)

select * from final
