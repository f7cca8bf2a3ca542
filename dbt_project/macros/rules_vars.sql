{#-
    Rules values (SPEC §5.1) that the Python side passes as dbt vars from the rules file in force; the defaults
    in dbt_project.yml are the packaged rules. Each macro validates its var at compile time, so a bad value
    fails the build with a message naming the var instead of computing wrong marts. A list var may arrive as a
    YAML/JSON list or as its JSON text ("[1, 2, 3, 5]").
-#}

{% macro rules_list_var(name) -%}
    {%- set value = var(name) -%}
    {%- if value is string -%}
        {%- set value = fromjson(value) -%}
    {%- endif -%}
    {%- if value is string or value is not iterable or value is mapping -%}
        {{ exceptions.raise_compiler_error("var '" ~ name ~ "' must be a list, got '" ~ var(name) ~ "'") }}
    {%- endif -%}
    {{ return(value | list) }}
{%- endmacro %}


{#- rfm.window_days: RFM looks at delivered orders placed in this many trailing days, the as-of date included. -#}
{% macro rfm_window_days() -%}
    {%- set value = var('rfm_window_days') | string | trim -%}
    {%- if not modules.re.match('^[0-9]+$', value) or (value | int) < 1 -%}
        {{ exceptions.raise_compiler_error("var 'rfm_window_days' must be a positive integer, got '" ~ value ~ "'") }}
    {%- endif -%}
    {{ return(value | int) }}
{%- endmacro %}


{#- rfm.frequency_bins: four strictly ascending positive order counts, the upper bounds of F scores 1 to 4. -#}
{% macro rfm_frequency_bins() -%}
    {%- set bins = rules_list_var('rfm_frequency_bins') -%}
    {%- set ns = namespace(ok=(bins | length) == 4, previous=0) -%}
    {%- for bin in bins -%}
        {%- if not modules.re.match('^[0-9]+$', bin | string) or (bin | int) <= ns.previous -%}
            {%- set ns.ok = false -%}
        {%- else -%}
            {%- set ns.previous = bin | int -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if not ns.ok -%}
        {{ exceptions.raise_compiler_error(
            "var 'rfm_frequency_bins' must be four strictly ascending positive order counts, e.g. [1, 2, 3, 5], got '"
            ~ var('rfm_frequency_bins') ~ "'") }}
    {%- endif -%}
    {{ return(bins | map('int') | list) }}
{%- endmacro %}


{#- redeem.points_per_unit: points a loyalty coupon worth 1.00 of the reporting currency costs (> 0). -#}
{% macro redeem_points_per_unit() -%}
    {%- set value = var('redeem_points_per_unit') | string | trim -%}
    {%- if not modules.re.match('^[0-9]+(\.[0-9]+)?$', value) or (value | float) <= 0 -%}
        {{ exceptions.raise_compiler_error("var 'redeem_points_per_unit' must be a positive number, got '" ~ value ~ "'") }}
    {%- endif -%}
    cast({{ value }} as decimal(18, 6))
{%- endmacro %}


{#- reporting_currency: ISO 4217 code of net_amount_reporting, as a SQL string literal. -#}
{% macro reporting_currency() -%}
    {%- set value = var('reporting_currency') | string | trim -%}
    {%- if not modules.re.match('^[A-Z]{3}$', value) -%}
        {{ exceptions.raise_compiler_error("var 'reporting_currency' must be an ISO 4217 code like USD, got '" ~ value ~ "'") }}
    {%- endif -%}
    '{{ value }}'
{%- endmacro %}


{#- tiers: tier names, lowest first (the order of the rules file). -#}
{% macro tier_names() -%}
    {%- set names = rules_list_var('tiers') -%}
    {%- if (names | length) == 0 -%}
        {{ exceptions.raise_compiler_error("var 'tiers' must list the tier names, lowest first") }}
    {%- endif -%}
    {{ return(names | map('string') | list) }}
{%- endmacro %}


{#- Rank of a tier name (0 = the lowest tier of var 'tiers'); null for a name the var does not list. -#}
{% macro tier_rank(tier) -%}
    case {{ tier }}
    {%- for name in tier_names() %}
        when '{{ name | replace("'", "''") }}' then {{ loop.index0 }}
    {%- endfor %}
    end
{%- endmacro %}

