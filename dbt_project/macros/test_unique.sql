{#-
    dbt's `unique` test on DuckDB, same result (each duplicated value with its count), found in two passes: the
    64-bit hashes of the values that occur more than once, then the values with those hashes counted exactly.
    The first pass groups integers, not the values: at 10M orders dbt's one-pass grouping of 23M event ids
    took seconds a test, most of it holding the strings (see README, Performance). A hash shared by two
    different values only sends them to the exact count, which tells them apart.
-#}
{% macro duckdb__test_unique(model, column_name) %}

with

repeated_hashes as (

    select hash({{ column_name }}) as value_hash

    from {{ model }}

    where {{ column_name }} is not null

    group by 1

    having count(*) > 1

)

select
    {{ column_name }} as unique_field,
    count(*) as n_records

from {{ model }}

where {{ column_name }} is not null
    and hash({{ column_name }}) in (select value_hash from repeated_hashes)

group by {{ column_name }}

having count(*) > 1

{% endmacro %}
