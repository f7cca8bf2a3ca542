{#-
    One row per RFM scoring date (every `period_end_date` of the month spine, the as-of date included) with a
    fingerprint of everything the date's scores are computed from: the delivered orders placed in its window
    (customer, day, amount), the window's length and the segment map. Equal fingerprints, equal scores: the
    incremental `int_customers_scored` recomputes only the dates whose fingerprint changed (a daily run: the
    new as-of date and the month ends whose window holds an order that changed), and is then identical to a
    full build. The customer is taken by `customer_key` (int_orders_delivered), not by customer_id: each key
    is one customer's, so equal digests still mean equal customers' orders, and a customer that identity only
    relabels (same orders, a new customer_id) changes no fingerprint. Digests are sums of row hashes (macro digest_sum), so they do not depend on row order.
-#}

with

delivered_orders as (

    select * from {{ ref('int_orders_delivered') }}

),

months as (

    select * from {{ ref('int_months_spined') }}

),

rfm_segments as (

    select * from {{ ref('rfm_segments') }}

),

scoring_windows as (

    select distinct
        period_end_date as scored_as_of,
        cast({{ dbt.dateadd('day', 1 - rfm_window_days(), 'period_end_date') }} as date) as window_start_date

    from months

),

order_days as (

    -- one digest per day with delivered orders: the window's digest then joins a row per day, not per order
    select
        placed_date,
        sum({{ row_hash(['customer_key', 'net_amount_reporting', 'placed_date']) }}) as day_digest

    from delivered_orders

    group by placed_date

),

window_digests as (

    select
        scoring_windows.scored_as_of,
        scoring_windows.window_start_date,
        coalesce({{ dbt.cast('sum(order_days.day_digest)', dbt.type_string()) }}, '') as orders_digest

    from scoring_windows

    left join order_days
        on
            order_days.placed_date >= scoring_windows.window_start_date
            and order_days.placed_date <= scoring_windows.scored_as_of

    group by scoring_windows.scored_as_of, scoring_windows.window_start_date

),

segments_digest as (

    select {{ digest_sum(['r_score', 'f_score', 'segment']) }} as segments_digest

    from rfm_segments

),

final as (

    select
        window_digests.scored_as_of,
        window_digests.window_start_date,
        {{ dbt.hash(
            "window_digests.orders_digest || '|' || "
            ~ dbt.cast('window_digests.window_start_date', dbt.type_string())
            ~ " || '|' || coalesce(segments_digest.segments_digest, '')"
        ) }} as window_fingerprint

    from window_digests

    cross join segments_digest

)

select * from final
