with

customer_rfm as (

    select * from {{ ref('customer_rfm') }}

),

rfm_segments as (

    select * from {{ ref('rfm_segments') }}

),

segments as (

    select distinct segment from rfm_segments

),

totals as (

    select count(*) as customers_scored from customer_rfm

),

by_segment as (

    select
        segment,
        count(*) as customers,
        avg(cast(recency_days as double)) as avg_recency_days,
        avg(cast(frequency as double)) as avg_frequency,
        avg(monetary) as avg_monetary,
        sum(monetary) as revenue

    from customer_rfm

    group by segment

),

final as (

    select
        segments.segment,
        {{ as_of_date() }} as as_of,
        cast(coalesce(by_segment.customers, 0) as integer) as customers,
        {{ safe_divide('coalesce(by_segment.customers, 0)', 'totals.customers_scored') }} as share,
        by_segment.avg_recency_days,
        by_segment.avg_frequency,
        cast(round(by_segment.avg_monetary, 2) as decimal(18, 2)) as avg_monetary,
        cast(coalesce(by_segment.revenue, 0) as decimal(18, 2)) as revenue,
        {{ reporting_currency() }} as reporting_currency

    from segments

    cross join totals

    left join by_segment on segments.segment = by_segment.segment

)

select * from final
