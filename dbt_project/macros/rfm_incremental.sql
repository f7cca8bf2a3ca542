{#- The incremental build of int_customers_scored (see the model): which scoring dates are already scored. -#}

{#-
    A scoring date's `scoring_fingerprint`: its window's fingerprint (int_scoring_windows_fingerprinted: the
    orders, the window, the segment map) with a digest of the scoring code, i.e. the text of the model calling
    this and the score macros as rendered with the rules vars. A change of code or rules re-scores every date.
-#}
{% macro rfm_scoring_fingerprint(window_fingerprint) -%}
    {%- set code = model.raw_code ~ rfm_quintile_score('worse', 'scored') ~ rfm_f_score('frequency') -%}
    {{ dbt.hash(window_fingerprint ~ " || '" ~ local_md5(code) ~ "'") }}
{%- endmacro %}


{#-
    True on an incremental build of a table that has `scoring_fingerprint`; false on a full build and on a table
    built before the column existed (a warehouse from an older version: the pre-hook then adds the column and
    empties the table, and every date is scored again).
-#}
{% macro scoring_fingerprints_kept() -%}
    {%- if not (execute and is_incremental()) -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set columns = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
    {{ return('scoring_fingerprint' in columns) }}
{%- endmacro %}


{#-
    Pre-hook of int_customers_scored: on an incremental build, delete the rows whose scoring fingerprint is no
    longer a current one (their date's orders, rules or code changed, or the date is no longer a scoring date:
    yesterday's as-of date), or every row of a table without fingerprints. The model then scores the dates
    left without rows.
-#}
{% macro delete_rows_of_changed_scoring_dates() -%}
    {%- if scoring_fingerprints_kept() -%}
        delete from {{ this }}
        where scoring_fingerprint not in (
            select {{ rfm_scoring_fingerprint('window_fingerprint') }}
            from {{ ref('int_scoring_windows_fingerprinted') }}
        )
    {%- elif execute and is_incremental() -%}
        {#- the column first: DuckDB refuses to alter a table this transaction already changed -#}
        alter table {{ this }} add column scoring_fingerprint varchar;
        delete from {{ this }}
    {%- endif -%}
{%- endmacro %}
