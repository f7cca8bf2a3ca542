{#-
    numerator ÷ denominator as a double, null when the denominator is 0 or null. DuckDB returns inf (not an
    error, not null) for x / 0, so every ratio of the marts goes through here: a rate over nothing is unknown.
-#}
{% macro safe_divide(numerator, denominator) -%}
    case
        when {{ denominator }} is null or {{ denominator }} = 0 then null
        else cast({{ numerator }} as double) / {{ denominator }}
    end
{%- endmacro %}
