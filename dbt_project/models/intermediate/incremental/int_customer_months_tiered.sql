{#-
    One row per loyalty member and month, from the month of the member's first points entry to the as-of month:
    the tier held at the end of the month and at the end of the month before, the month's points flows by entry
    type, and the balance at the end of the month. Feeds `tier_migration` and `points_redemption`.

    - Tier at a month end = `tier_to` of the member's last `tier_history` change up to that instant (a downgrade
      on the 1st at 00:00 belongs to the month it opens); before any change, the tier the member started in:
      `tier_from` of the first change, else the current tier of `customer_points` (it never changed), else the
      lowest tier of var `tiers`. For the as-of month the "end" is the end of the as-of date (nothing later is
      in the ledger).
    - `tier_from` of the first month is that starting tier: a new member enters at it.
    - Flows are positive numbers of points: earned (earn), bonus, redeemed (−redeem), reversed (earn and bonus
      taken back by reversals, i.e. −Σ negative reversals), refunded (redemptions given back, Σ positive
      reversals), expired (−expire), adjusted (write-offs of negative balances); net_points is the signed sum.

    Incremental: a build computes only the members whose fingerprint (`int_members_fingerprinted`, plus this
    model's code and the tier names: `member_fingerprint`) is not in the table yet; the pre-hook first deletes
    the rows of members whose fingerprint changed or who are no longer members. A daily run thus computes the
    customers whose ledger changed (every member when the as-of date enters a new month), and leaves the table
    as a full build would make it.
-#}

{{ config(
    incremental_strategy='append',
    on_schema_change='sync_all_columns',
    pre_hook="{{ delete_rows_of_changed_members() }}",
) }}

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

members_fingerprinted as (

    select * from {{ ref('int_members_fingerprinted') }}

),

member_fingerprints as (

    select
        customer_id,
        {{ member_months_fingerprint('inputs_fingerprint') }} as member_fingerprint

    from members_fingerprinted

),

members_to_compute as (

    select * from member_fingerprints

    {{ where_fingerprint_is_new('member_fingerprint') }}

),

entries as (

    select
        customer_id,
        entry_type,
        points,
        cast({{ dbt.date_trunc('month', 'effective_at') }} as date) as month

    from points_ledger

    where
        effective_at < {{ as_of_cutoff() }}
        and customer_id in (select customer_id from members_to_compute)

),

members as (

    select
        customer_id,
        min(month) as member_since

    from entries

    group by customer_id

),

monthly_points as (

    select
        customer_id,
        month,
        sum(case when entry_type = 'earn' then points else 0 end) as earned,
        sum(case when entry_type = 'bonus' then points else 0 end) as bonus,
        -sum(case when entry_type = 'redeem' then points else 0 end) as redeemed,
        -sum(case when entry_type = 'reversal' and points < 0 then points else 0 end) as reversed,
        sum(case when entry_type = 'reversal' and points > 0 then points else 0 end) as refunded,
        -sum(case when entry_type = 'expire' then points else 0 end) as expired,
        sum(case when entry_type = 'adjust' then points else 0 end) as adjusted,
        sum(points) as net_points

    from entries

    group by customer_id, month

),

tier_changes as (

    select
        customer_id,
        tier_from,
        tier_to,
        changed_at,
        row_number() over (partition by customer_id order by changed_at) as change_number

    from tier_history

    where
        changed_at < {{ as_of_cutoff() }}
        and customer_id in (select customer_id from members_to_compute)

),

starting_tiers as (

    select
        members.customer_id,
        coalesce(
            first_changes.tier_from,
            customer_points.tier,
            '{{ tier_names()[0] | replace("'", "''") }}'
        ) as starting_tier

    from members

    left join tier_changes as first_changes
        on
            members.customer_id = first_changes.customer_id
            and first_changes.change_number = 1

    left join customer_points
        on members.customer_id = customer_points.customer_id

),

member_months as (

    select
        members.customer_id,
        members.member_since,
        months.month

    from members

    inner join months on members.member_since <= months.month

),

tier_change_months as (

    -- the month whose end a change counts for: its own, or the member's first month for earlier changes
    select
        tier_changes.customer_id,
        greatest(
            cast({{ dbt.date_trunc('month', 'tier_changes.changed_at') }} as date),
            members.member_since
        ) as month,
        tier_changes.tier_to,
        tier_changes.change_number

    from tier_changes

    inner join members on tier_changes.customer_id = members.customer_id

),

month_end_changes as (

    -- the last change of the month sets the tier at its end
    select
        customer_id,
        month,
        arg_max(tier_to, change_number) as tier_to

    from tier_change_months

    group by customer_id, month

),

tiered as (

    select
        member_months.customer_id,
        member_months.month,
        member_months.month = member_months.member_since as is_new_member,
        coalesce(
            -- the tier holds until the next month with a change: carry the last one forward (an equality
            -- join and a window, not a range join of every month against every change of the member)
            last_value(month_end_changes.tier_to ignore nulls) over (
                partition by member_months.customer_id
                order by member_months.month
                rows between unbounded preceding and current row
            ),
            starting_tiers.starting_tier
        ) as tier,
        starting_tiers.starting_tier

    from member_months

    inner join starting_tiers
        on member_months.customer_id = starting_tiers.customer_id

    left join month_end_changes
        on
            member_months.customer_id = month_end_changes.customer_id
            and member_months.month = month_end_changes.month

),

final as (

    select
        tiered.customer_id,
        tiered.month,
        tiered.is_new_member,
        coalesce(
            lag(tiered.tier) over (partition by tiered.customer_id order by tiered.month),
            tiered.starting_tier
        ) as tier_from,
        tiered.tier,
        cast(coalesce(monthly_points.earned, 0) as bigint) as earned,
        cast(coalesce(monthly_points.bonus, 0) as bigint) as bonus,
        cast(coalesce(monthly_points.redeemed, 0) as bigint) as redeemed,
        cast(coalesce(monthly_points.reversed, 0) as bigint) as reversed,
        cast(coalesce(monthly_points.refunded, 0) as bigint) as refunded,
        cast(coalesce(monthly_points.expired, 0) as bigint) as expired,
        cast(coalesce(monthly_points.adjusted, 0) as bigint) as adjusted,
        cast(coalesce(monthly_points.net_points, 0) as bigint) as net_points,
        cast(
            sum(coalesce(monthly_points.net_points, 0)) over (
                partition by tiered.customer_id
                order by tiered.month
                rows between unbounded preceding and current row
            ) as bigint
        ) as balance,
        members_to_compute.member_fingerprint

    from tiered

    inner join members_to_compute
        on tiered.customer_id = members_to_compute.customer_id

    left join monthly_points
        on
            tiered.customer_id = monthly_points.customer_id
            and tiered.month = monthly_points.month

)

select * from final
