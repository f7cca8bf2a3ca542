{#-
    A table an earlier version of this project built and this one does not: dropped by a pre-hook of the model
    that took over its role, so that no stale copy stays in the warehouse for someone to query (dbt leaves a
    model's table behind when the model becomes ephemeral or goes).
    - intermediate.int_points_pivoted_to_orders: ephemeral since 2026-11 (`fct_orders` reads it as a CTE).
-#}
{% macro drop_retired_table(schema, identifier) -%}
    drop table if exists {{ api.Relation.create(database=this.database, schema=schema, identifier=identifier) }}
{%- endmacro %}
