{#-
    A composite key is unique: no combination of `combination_of_columns` occurs on more than one row.
    Our own stand-in for dbt_utils' test of the same name (no dbt packages in this project).
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

{%- set key_columns = combination_of_columns | join(', ') %}

with

{#- two passes, as `unique` (macros/test_unique.sql): the key hashes that repeat, then those keys exactly #}
repeated_hashes as (

    select hash({{ key_columns }}) as key_hash

    from {{ model }}

    group by 1

    having count(*) > 1

),

duplicated_keys as (

    select
        {{ key_columns }},
        count(*) as n_rows

    from {{ model }}

    where hash({{ key_columns }}) in (select key_hash from repeated_hashes)

    group by {{ key_columns }}

    having count(*) > 1

)

select * from duplicated_keys

{% endtest %}
