{#-
    Every row satisfies `expression` (a SQL boolean over the model's columns); null counts as a failure.
    Our own stand-in for dbt_utils' test of the same name (no dbt packages in this project).
-#}
{% test expression_is_true(model, expression) %}

with

failing_rows as (

    select *

    from {{ model }}

    where not coalesce({{ expression }}, false)

)

select * from failing_rows

{% endtest %}
