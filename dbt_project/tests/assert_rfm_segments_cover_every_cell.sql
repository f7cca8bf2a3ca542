{#-
    The segment map covers all 25 (R, F) cells: with the seed's unique and accepted-values tests, 25 rows mean
    each cell exactly once. Returns a row (fails) otherwise.
-#}

with

rfm_segments as (

    select * from {{ ref('rfm_segments') }}

),

cells as (

    select count(*) as n_cells

    from rfm_segments

)

select * from cells

where n_cells <> 25
