{#-
    Incremental models by fingerprint (models/intermediate/incremental/). Such a model stores, on each row, the
    fingerprint of what the row was computed from (`fingerprint_column`); a `*_fingerprinted` model gives the
    current fingerprints. A build deletes the rows whose fingerprint is no longer current (pre-hook
    `delete_rows_with_stale_fingerprints`), then computes only what has no row with its current fingerprint:
    the table is then what a full build makes, whatever changed in between.
-#}

{#-
    An order-independent digest of a group's rows: the sum of a 64-bit hash of each row's `columns` (a multiset:
    a repeated row counts twice). Not md5 over an ordered list: that sorts and holds every row of a group, and
    over the 16.7M points entries of 10M orders it ran DuckDB out of its memory limit. `hash` is DuckDB's; on
    another engine `row_hash` is the one place to change.
-#}
{% macro digest_sum(columns) -%}
    {{ dbt.cast('sum(' ~ row_hash(columns) ~ ')', dbt.type_string()) }}
{%- endmacro %}


{% macro row_hash(columns) -%}
    hash({{ columns | join(', ') }})
{%- endmacro %}


{#-
    A digest of the calling model's code and of `also` (the rendered text of the macros and vars it depends
    on): part of every fingerprint it stores, so new code or rules recompute every row.
-#}
{% macro code_fingerprint(also='') -%}
    {{- local_md5(model.raw_code ~ also) -}}
{%- endmacro %}


{#-
    True on an incremental build of a table that has `fingerprint_column`; false on a full build and on a table
    built before the column existed (a warehouse from an older version: the pre-hook then adds the column and
    empties the table, and every row is computed again).
-#}
{% macro fingerprints_kept(fingerprint_column) -%}
    {%- if not (execute and is_incremental()) -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set columns = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
    {{ return(fingerprint_column in columns) }}
{%- endmacro %}


{#-
    The read side: a `where` clause keeping the rows (of a query with `fingerprint_column`) whose fingerprint has
    no row in the table yet, i.e. what an incremental build computes; nothing on a full build.
-#}
{% macro where_fingerprint_is_new(fingerprint_column) -%}
    {%- if fingerprints_kept(fingerprint_column) -%}
        where {{ fingerprint_column }} not in (
            select distinct {{ fingerprint_column }} from {{ this }} where {{ fingerprint_column }} is not null
        )
    {%- endif -%}
{%- endmacro %}


{#-
    The delete side, a pre-hook: on an incremental build, delete the rows whose fingerprint is not among
    `current_fingerprints` (a query of one column), or every row of a table without the column. (The nulls left
    out of both `not in` lists would otherwise make them match nothing; no fingerprint is null.)
-#}
{% macro delete_rows_with_stale_fingerprints(fingerprint_column, current_fingerprints) -%}
    {%- if fingerprints_kept(fingerprint_column) -%}
        delete from {{ this }} where {{ fingerprint_column }} not in (
            select fingerprint from ({{ current_fingerprints }}) as current_fingerprints (fingerprint)
            where fingerprint is not null
        )
    {%- elif execute and is_incremental() -%}
        {#- the column first: DuckDB refuses to alter a table this transaction already changed -#}
        alter table {{ this }} add column {{ fingerprint_column }} {{ dbt.type_string() }};
        delete from {{ this }}
    {%- endif -%}
{%- endmacro %}


{#- int_customers_scored: a scoring date's fingerprint, its window's with the scoring code and score macros. -#}
{% macro rfm_scoring_fingerprint(window_fingerprint) -%}
    {%- set code = code_fingerprint(rfm_quintile_score('worse', 'scored') ~ rfm_f_score('frequency')) -%}
    {{ dbt.hash(window_fingerprint ~ " || '" ~ code ~ "'") }}
{%- endmacro %}


{% macro delete_rows_of_changed_scoring_dates() -%}
    {%- set current -%}
        select {{ rfm_scoring_fingerprint('window_fingerprint') }}
        from {{ ref('int_scoring_windows_fingerprinted') }}
    {%- endset -%}
    {{ delete_rows_with_stale_fingerprints('scoring_fingerprint', current) }}
{%- endmacro %}


{#-
    int_customers_scored, after the delete: the rows kept whose customer identity has since relabelled take the
    customer's customer_id of now, found by `customer_key` (one customer's each). Nothing on a full build, nor
    on a table from before the key (its fingerprints all changed with the key: the delete emptied it).
-#}
{% macro relabel_kept_scores() -%}
    {%- if fingerprints_kept('scoring_fingerprint') and fingerprints_kept('customer_key') -%}
        update {{ this }} as kept
        set customer_id = keys.customer_id
        from (
            select distinct customer_key, customer_id from {{ ref('int_orders_delivered') }}
        ) as keys
        where kept.customer_key = keys.customer_key and kept.customer_id <> keys.customer_id
    {%- endif -%}
{%- endmacro %}


{#- int_customer_months_tiered: a member's fingerprint, their inputs' with the model's code and tier names. -#}
{% macro member_months_fingerprint(inputs_fingerprint) -%}
    {%- set code = code_fingerprint(tier_names() | join(',')) -%}
    {{ dbt.hash(inputs_fingerprint ~ " || '" ~ code ~ "'") }}
{%- endmacro %}


{% macro delete_rows_of_changed_members() -%}
    {%- set current -%}
        select {{ member_months_fingerprint('inputs_fingerprint') }}
        from {{ ref('int_members_fingerprinted') }}
    {%- endset -%}
    {{ delete_rows_with_stale_fingerprints('member_fingerprint', current) }}
{%- endmacro %}


{#-
    rfm_history (marts/incremental), incremental by month without a bookkeeping column in the published mart:
    what the table holds is recorded beside it, in `intermediate.rfm_history__<name>` (`record`), and what it
    should hold now is computed once per build, by the first pre-hook, into temp tables `rfm_history__<name>_now`
    (`now`, the build's own connection):
    - months: each month end, with its fingerprint (`rfm_history_month_fingerprints`);
    - customers: each scored customer_id, with its customer's `customer_key` (one customer's).
-#}
{% macro rfm_history_record(name) -%}
    {{- return(api.Relation.create(database=this.database, schema='intermediate', identifier='rfm_history__' ~ name)) -}}
{%- endmacro %}


{% macro rfm_history_now(name) -%}
    {{- 'rfm_history__' ~ name ~ '_now' -}}
{%- endmacro %}


{#- True on an incremental build with both records present (else the table is built whole). -#}
{% macro rfm_history_kept() -%}
    {%- if not (execute and is_incremental()) -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set months, customers = rfm_history_record('months'), rfm_history_record('customers') -%}
    {%- set found -%}
        select count(*) from information_schema.tables
        where table_catalog = '{{ months.database }}' and table_schema = '{{ months.schema }}'
            and table_name in ('{{ months.identifier }}', '{{ customers.identifier }}')
    {%- endset -%}
    {{ return(run_query(found).columns[0].values()[0] == 2) }}
{%- endmacro %}


{#-
    One row per month end of the spine: a digest of the scoring fingerprints (int_customers_scored, which covers
    its orders, code and rules) of the month's scoring date and of the previous month end, with the model's code.
    Equal fingerprints, equal rows but for customer ids (relabels: `relabel_rfm_history`).
-#}
{% macro rfm_history_month_fingerprints() -%}
    {%- set scores -%}
        (select distinct scored_as_of, scoring_fingerprint from {{ ref('int_customers_scored') }})
    {%- endset -%}
    select
        months.month_end,
        {{ dbt.hash(
            "coalesce(scores.scoring_fingerprint, '') || '|' || coalesce(previous_scores.scoring_fingerprint, '')"
            ~ " || '|' || '" ~ code_fingerprint() ~ "'"
        ) }} as history_fingerprint
    from {{ ref('int_months_spined') }} as months
    left join {{ scores }} as scores on months.period_end_date = scores.scored_as_of
    left join {{ scores }} as previous_scores
        on cast({{ dbt.dateadd('day', -1, dbt.date_trunc('month', 'months.month_end')) }} as date)
            = previous_scores.scored_as_of
{%- endmacro %}


{#- The month ends whose rows a build keeps: recorded with the fingerprint they have now. -#}
{% macro rfm_history_months_kept() -%}
    select now.month_end
    from {{ rfm_history_now('months') }} as now
    inner join {{ rfm_history_record('months') }} as built
        on now.month_end = built.month_end and now.history_fingerprint = built.history_fingerprint
{%- endmacro %}


{#-
    First pre-hook: what the table should hold now (on every build: the post-hook records it), then, on an
    incremental build, delete the rows of the months not kept (every row when the records are missing).
-#}
{% macro prepare_rfm_history() -%}
    create or replace temp table {{ rfm_history_now('months') }} as {{ rfm_history_month_fingerprints() }};
    create or replace temp table {{ rfm_history_now('customers') }} as
        select distinct customer_id, customer_key from {{ ref('int_customers_scored') }};
    {%- if rfm_history_kept() %}
        delete from {{ this }} where month_end not in ({{ rfm_history_months_kept() }})
    {%- elif execute and is_incremental() %}
        delete from {{ this }}
    {%- endif -%}
{%- endmacro %}


{#-
    Second pre-hook: the rows kept whose customer identity has since relabelled take the customer's customer_id
    of now (int_customers_scored relabelled its own rows already), found through the customer's key. A customer
    id was one customer's when recorded, so each old id has at most one new one. Nothing when none changed.
-#}
{% macro relabel_rfm_history() -%}
    {%- if rfm_history_kept() -%}
        {%- set relabels -%}
            select built.customer_id as old_customer_id, now.customer_id as new_customer_id
            from {{ rfm_history_record('customers') }} as built
            inner join {{ rfm_history_now('customers') }} as now on built.customer_key = now.customer_key
            where built.customer_id <> now.customer_id
        {%- endset -%}
        {%- if run_query('select count(*) from (' ~ relabels ~ ')').columns[0].values()[0] > 0 -%}
            update {{ this }} as kept
            set customer_id = relabels.new_customer_id
            from ({{ relabels }}) as relabels
            where kept.customer_id = relabels.old_customer_id
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}


{#- Post-hook, in the build's transaction: record what the table now holds. -#}
{% macro record_rfm_history_built() -%}
    create or replace table {{ rfm_history_record('months') }} as select * from {{ rfm_history_now('months') }};
    create or replace table {{ rfm_history_record('customers') }} as
        select * from {{ rfm_history_now('customers') }}
{%- endmacro %}
