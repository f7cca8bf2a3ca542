{#-
    The as-of date of a build (SPEC §5: the date D covers the whole day, UTC) as a SQL date literal.
    It comes from the `as_of` var, else from the environment variable LOYALTY_AS_OF (how the pipeline passes
    it: a var that changes from one run to the next would make dbt parse the whole project again); when both
    are unset or empty it is today in UTC, fixed at compile time so every model of one invocation agrees on it
    (the database's current_date follows the session time zone, not UTC).
    LOYALTY_AS_OF is read only when a model is compiled (`execute`), not while it is parsed: dbt parses again
    every file that read a changed environment variable at parse time (11 files, about 1 s of a daily run),
    and the parse of a model does not depend on the date (tests/test_dbt_project.py).
-#}
{% macro as_of_date() -%}
    {%- set raw = var('as_of', none) -%}
    {%- if (raw is none or (raw | string | trim) == '') and execute -%}
        {%- set raw = env_var('LOYALTY_AS_OF', '') -%}
    {%- endif -%}
    {%- if raw is none or (raw | string | trim) == '' -%}
        {%- set value = modules.datetime.datetime.now(modules.pytz.utc).date().isoformat() -%}
    {%- else -%}
        {%- set value = raw | string | trim -%}
    {%- endif -%}
    {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', value) -%}
        {{ exceptions.raise_compiler_error("var 'as_of' must be a date YYYY-MM-DD, got '" ~ value ~ "'") }}
    {%- endif -%}
    cast('{{ value }}' as date)
{%- endmacro %}


{#-
    Exclusive upper bound of "up to the end of the as-of date": 00:00 UTC of the day after it, as a timestamp.
    Compare `ts < as_of_cutoff()`, never `cast(ts as date) <= as_of_date()`, so the filter can use the column.
-#}
{% macro as_of_cutoff() -%}
    cast({{ dbt.dateadd('day', 1, as_of_date()) }} as timestamp)
{%- endmacro %}
