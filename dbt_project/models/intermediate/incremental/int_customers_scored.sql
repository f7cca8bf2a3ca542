{#-
    RFM scoring (SPEC §6), once, for every date a mart scores as of: each month's period end (its last day, or
    the as-of date within the as-of month). `customer_rfm` is the as-of date's slice, `rfm_history` all of it.

    - Window: delivered orders placed in the trailing `rfm_window_days` days up to the end of the scoring date,
      i.e. placed_date between scoring date − (window − 1) days and the scoring date.
    - recency_days = scoring date − date of the last such order; frequency = their count;
      monetary = Σ net_amount_reporting.
    - r_score, m_score = 1 + floor(5 × worse ÷ scored), where worse = the customers of that scoring date with a
      strictly larger recency (R) or a strictly smaller monetary (M): `rank() - 1` over the worse-first order.
      Equal values get equal ranks, so ties share a score and the result does not depend on row order.
      Computed in integers (macro rfm_quintile_score): no floating-point rounding at the quintile boundaries.
    - f_score: fixed bins `rfm_frequency_bins` (macros/rules_vars.sql).
    - segment: the (r_score, f_score) cell of the `rfm_segments` seed.
    Orders are first summed per customer-day, so the window join touches one row per purchase-day and month.

    Incremental: a build computes only the scoring dates whose fingerprint (`int_scoring_windows_fingerprinted`,
    plus this model's code and score macros: `scoring_fingerprint`) is not in the table yet; the pre-hook first
    deletes the rows of dates whose fingerprint changed or that are no longer scoring dates, then gives the rows
    kept the customer_id their `customer_key` has now (identity may have relabelled a customer: windows are
    fingerprinted by key, so that alone re-scores nothing). A daily run thus scores the new as-of date and the
    month ends whose window holds a changed order, and leaves the table as a full build would make it.
-#}

{{ config(
    incremental_strategy='append',
    on_schema_change='sync_all_columns',
    pre_hook=["{{ delete_rows_of_changed_scoring_dates() }}", "{{ relabel_kept_scores() }}"],
) }}

with

delivered_orders as (

    select * from {{ ref('int_orders_delivered') }}

),

scoring_windows as (

    select * from {{ ref('int_scoring_windows_fingerprinted') }}

),

rfm_segments as (

    select * from {{ ref('rfm_segments') }}

),

purchase_days as (

    select
        customer_id,
        customer_key,
        cast(placed_at as date) as placed_date,
        count(*) as orders,
        sum(coalesce(net_amount_reporting, 0)) as amount

    from delivered_orders

    group by customer_id, customer_key, cast(placed_at as date)

),

scoring_dates as (

    select
        scored_as_of,
        cast({{ dbt.dateadd('day', 1 - rfm_window_days(), 'scored_as_of') }} as date) as window_start_date,
        {{ rfm_scoring_fingerprint('window_fingerprint') }} as scoring_fingerprint

    from scoring_windows

),

dates_to_score as (

    select * from scoring_dates

    {{ where_fingerprint_is_new('scoring_fingerprint') }}

),

customers_in_window as (

    select
        dates_to_score.scored_as_of,
        dates_to_score.scoring_fingerprint,
        purchase_days.customer_id,
        purchase_days.customer_key,
        max(purchase_days.placed_date) as last_order_date,
        cast(sum(purchase_days.orders) as bigint) as frequency,
        cast(sum(purchase_days.amount) as decimal(18, 2)) as monetary

    from dates_to_score

    inner join purchase_days
        on
            purchase_days.placed_date >= dates_to_score.window_start_date
            and purchase_days.placed_date <= dates_to_score.scored_as_of

    group by
        dates_to_score.scored_as_of,
        dates_to_score.scoring_fingerprint,
        purchase_days.customer_id,
        purchase_days.customer_key

),

measured as (

    select
        *,
        cast({{ dbt.datediff('last_order_date', 'scored_as_of', 'day') }} as integer) as recency_days

    from customers_in_window

),

ranked as (

    select
        *,
        count(*) over (partition by scored_as_of) as customers_scored,
        rank() over (partition by scored_as_of order by recency_days desc) - 1 as customers_less_recent,
        rank() over (partition by scored_as_of order by monetary asc) - 1 as customers_spending_less

    from measured

),

scored as (

    select
        scored_as_of,
        customer_id,
        customer_key,
        last_order_date,
        recency_days,
        cast(frequency as integer) as frequency,
        monetary,
        cast({{ rfm_quintile_score('customers_less_recent', 'customers_scored') }} as integer) as r_score,
        cast({{ rfm_f_score('frequency') }} as integer) as f_score,
        cast({{ rfm_quintile_score('customers_spending_less', 'customers_scored') }} as integer) as m_score,
        cast(customers_scored as integer) as customers_scored,
        scoring_fingerprint

    from ranked

),

final as (

    select
        scored.scored_as_of,
        scored.customer_id,
        scored.customer_key,
        scored.last_order_date,
        scored.recency_days,
        scored.frequency,
        scored.monetary,
        scored.r_score,
        scored.f_score,
        scored.m_score,
        {{ dbt.concat([
            dbt.cast('scored.r_score', dbt.type_string()),
            dbt.cast('scored.f_score', dbt.type_string()),
            dbt.cast('scored.m_score', dbt.type_string()),
        ]) }} as rfm_cell,
        rfm_segments.segment,
        scored.customers_scored,
        scored.scoring_fingerprint

    from scored

    left join rfm_segments
        on
            scored.r_score = rfm_segments.r_score
            and scored.f_score = rfm_segments.f_score

)

select * from final
