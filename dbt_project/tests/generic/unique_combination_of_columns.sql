{#-
    A composite key is unique: no combination of `combination_of_columns` occurs on more than one row.
    Our own stand-in for dbt_utils' test of the same name (no dbt packages in this project).
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

{%- set key_columns = combination_of_columns | join(', ') %}

with

duplicated_keys as (

    select
        {{ key_columns }},
        count(*) as n_rows

    from {{ model }}

    group by {{ key_columns }}

    having count(*) > 1

)

select * from duplicated_keys

{% endtest %}
