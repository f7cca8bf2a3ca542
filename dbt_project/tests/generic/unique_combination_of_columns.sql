{#-
    A composite key is unique: no combination of `combination_of_columns` occurs on more than one row.
    Our own stand-in for dbt_utils' test of the same name (no dbt packages in this project); found in two
    passes, as `unique` (macros/test_unique.sql).
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

{%- set key_columns = combination_of_columns | join(', ') %}

{{ duplicated_keys(model, key_columns, key_columns, 'n_rows') }}

{% endtest %}
