{#-
    One row per loyalty member (a customer with a points entry before the as-of cutoff) with a fingerprint of
    everything `int_customer_months_tiered` computes the member's rows from: their points entries (type, points,
    month), their tier changes, their current tier, and the as-of month (the last month of the spine). Equal
    fingerprints, equal rows: the incremental `int_customer_months_tiered` recomputes only the members whose
    fingerprint changed (a daily run: the customers whose ledger was computed again), every member when the
    as-of date enters a new month. Digests are sums of row hashes (macro digest_sum): independent of row order.
-#}

with

points_ledger as (

    select * from {{ ref('stg_core__points_ledger') }}

),

tier_history as (

    select * from {{ ref('stg_core__tier_history') }}

),

customer_points as (

    select * from {{ ref('stg_core__customer_points') }}

),

months as (

    select * from {{ ref('int_months_spined') }}

),

entries_digests as (

    select
        customer_id,
        {{ digest_sum(['entry_type', 'points', dbt.date_trunc('month', 'effective_at')]) }} as entries_digest

    from points_ledger

    where effective_at < {{ as_of_cutoff() }}

    group by customer_id

),

tier_changes_digests as (

    select
        customer_id,
        {{ digest_sum(['tier_from', 'tier_to', 'changed_at']) }} as tier_changes_digest

    from tier_history

    where changed_at < {{ as_of_cutoff() }}

    group by customer_id

),

as_of_month as (

    select {{ dbt.cast('max(month)', dbt.type_string()) }} as last_month from months

),

final as (

    select
        entries_digests.customer_id,
        {{ dbt.hash(
            "entries_digests.customer_id || '|' || entries_digests.entries_digest"
            ~ " || '|' || coalesce(tier_changes_digests.tier_changes_digest, '')"
            ~ " || '|' || coalesce(customer_points.tier, '')"
            ~ " || '|' || coalesce(as_of_month.last_month, '')"
        ) }} as inputs_fingerprint

    from entries_digests

    cross join as_of_month

    left join tier_changes_digests
        on entries_digests.customer_id = tier_changes_digests.customer_id

    left join customer_points
        on entries_digests.customer_id = customer_points.customer_id

)

select * from final
