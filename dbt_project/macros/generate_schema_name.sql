{#-
    Custom schemas are used verbatim, without dbt's `<target_schema>_` prefix, so the folders in
    dbt_project.yml land in exactly `staging`, `intermediate` and `marts` whatever the target.
    Nodes without a custom schema fall back to the target schema.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
