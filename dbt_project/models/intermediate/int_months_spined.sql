{#-
    The month spine of the monthly marts: every calendar month from the first month with a delivered order or a
    points entry up to the month of the as-of date, with no gaps. Empty when there is neither (an empty
    warehouse): every monthly mart is then empty too, not an error.
    The series is generated up to 1,200 months (100 years) before filtering, which is cheap and bounds the
    spine; dbt.generate_series keeps it portable.
-#}

with

delivered_orders as (

    select * from {{ ref('int_orders_delivered') }}

),

points_ledger as (

    select * from {{ ref('stg_core__points_ledger') }}

),

first_activity as (

    select min(placed_at) as first_at from delivered_orders

    union all

    select min(effective_at) as first_at from points_ledger where effective_at < {{ as_of_cutoff() }}

),

bounds as (

    select
        cast({{ dbt.date_trunc('month', 'min(first_at)') }} as date) as first_month,
        cast({{ dbt.date_trunc('month', as_of_date()) }} as date) as last_month

    from first_activity

),

month_numbers as (

    {{ dbt.generate_series(1200) }}

),

months as (

    select cast({{ dbt.dateadd('month', 'month_numbers.generated_number - 1', 'bounds.first_month') }} as date) as month

    from bounds

    cross join month_numbers

    where bounds.first_month is not null

),

final as (

    select

        months.month,
        cast({{ dbt.last_day('months.month', 'month') }} as date) as month_end,
        -- the date the month is scored as of: its last day, or the as-of date within the as-of month
        least(cast({{ dbt.last_day('months.month', 'month') }} as date), {{ as_of_date() }}) as period_end_date

    from months

    inner join bounds on months.month <= bounds.last_month

)

select * from final
