{#-
    fct_orders (marts/incremental), incremental by customer. An order's row depends on its core.orders row, on
    its customer's delivered orders (the first purchase), on its points entries up to the as-of date, and on the
    code and the reporting currency. Since the last build, those changed only for:
    - the orders of a canonical run merged since (core.canonical_runs lists the ingest runs whose events the
      canonical tables hold; the orders with an event of a new run are the orders merged again), and every
      order of their customers: identity only ever joins customers (events are added, never taken away), so an
      order relabelled belongs now to a customer with such an order;
    - the orders of the customers the ledger computed again since (core.ledger_changes, one number per
      computation: the customers each wrote, or a null customer for "everyone");
    - the orders of the customers with an order placed, or a points entry effective, between the two as-of
      dates (the first purchase and the points count up to the end of the as-of date).
    A build computes those orders again and replaces the rows that differ from the ones stored (often most of
    them are the same: the ledger computes a customer again when any entry of theirs may change, and one
    order's new status rarely changes the first purchase). It builds whole (deletes every row) when
    there is no record of the last build, or the code or reporting currency changed, or the canonical tables
    were merged again under other rules (core.canonical_runs' fingerprint), or the ledger was computed whole or
    its changes since are no longer all kept, or the as-of date went back. What was built is recorded beside
    the mart, in the build's transaction: `intermediate.fct_orders__built` (one row: the code's fingerprint,
    the canonical fingerprint, the ledger computation and the as-of date) and `intermediate.fct_orders__runs`
    (the canonical runs). The table is then what a full build makes (tests/test_marts.py).
-#}

{% macro fct_orders_relation(schema, identifier) -%}
    {{- return(api.Relation.create(database=this.database, schema=schema, identifier=identifier)) -}}
{%- endmacro %}


{#-
    The code a row of fct_orders is computed by: this model's, its inputs' (the points pivot as the macro
    renders it, the as-of date left out) and the reporting currency.
-#}
{% macro fct_orders_code_fingerprint() -%}
    {%- set also = [reporting_currency(), pivot_points_to_orders() | replace(as_of_date(), '')] -%}
    {%- for name in ['stg_core__orders', 'stg_core__points_ledger', 'int_orders_delivered',
                     'int_points_pivoted_to_orders'] -%}
        {%- do also.append(graph.nodes['model.' ~ project_name ~ '.' ~ name].raw_code) -%}
    {%- endfor -%}
    {{- code_fingerprint(also | join('|')) -}}
{%- endmacro %}


{#-
    Which of the Python steps' bookkeeping tables and this model's records exist, as `schema.table` (an older
    warehouse or a test's may lack some); none before `execute`.
-#}
{% macro fct_orders_tables_present() -%}
    {%- if not execute -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set found -%}
        select table_schema || '.' || table_name from information_schema.tables
        where table_catalog = '{{ this.database }}' and (table_schema, table_name) in (
            ('core', 'canonical_runs'), ('core', 'ledger_changes'),
            ('intermediate', 'fct_orders__built'), ('intermediate', 'fct_orders__runs')
        )
    {%- endset -%}
    {{ return(run_query(found).columns[0].values() | list) }}
{%- endmacro %}


{#- True on an incremental build that can keep the rows of the orders nothing changed (see above). -#}
{% macro fct_orders_kept() -%}
    {%- if not (execute and is_incremental()) -%}
        {{ return(false) }}
    {%- endif -%}
    {%- if fct_orders_tables_present() | length < 4 -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set check -%}
        select
            built.code_fingerprint = '{{ fct_orders_code_fingerprint() }}'
            and built.as_of <= {{ as_of_date() }}
            and (select count(distinct fingerprint) from {{ fct_orders_relation('core', 'canonical_runs') }})
                = 1
            and (select min(fingerprint) from {{ fct_orders_relation('core', 'canonical_runs') }})
                = built.canonical_fingerprint
            and not exists (
                select 1 from {{ fct_orders_relation('core', 'ledger_changes') }}
                where computation > built.ledger_computation and customer_id is null
            )
        from {{ fct_orders_relation('intermediate', 'fct_orders__built') }} as built
    {%- endset -%}
    {%- set rows = run_query(check).columns[0].values() -%}
    {{ return(rows | length == 1 and rows[0] == true) }}
{%- endmacro %}


{#-
    Pre-hook: on an incremental build that keeps rows, the customers and orders to compute again (temp tables
    `fct_orders__customers_now`, `fct_orders__orders_now`, which the model reads; dbt's delete+insert then
    replaces the rows that differ); on another incremental build, every row deleted.
-#}
{% macro prepare_fct_orders() -%}
    {%- if fct_orders_kept() -%}
        {%- set built = fct_orders_relation('intermediate', 'fct_orders__built') -%}
        {%- set orders = source('core', 'orders') -%}
        {%- set since = "(select cast(" ~ dbt.dateadd('day', 1, 'as_of') ~ " as timestamp) from " ~ built ~ ")" -%}
        create or replace temp table fct_orders__touched as
            select distinct order_id from {{ source('core', 'order_events') }}
            where run_id in (
                select run_id from {{ fct_orders_relation('core', 'canonical_runs') }}
                except
                select run_id from {{ fct_orders_relation('intermediate', 'fct_orders__runs') }}
            );
        create or replace temp table fct_orders__customers_now as
            select customer_id from {{ orders }}
            where order_id in (select order_id from fct_orders__touched)
            union
            select customer_id from {{ fct_orders_relation('core', 'ledger_changes') }}
            where computation > (select ledger_computation from {{ built }})
            union
            select customer_id from {{ orders }}
            where placed_at >= {{ since }} and placed_at < {{ as_of_cutoff() }}
            union
            select customer_id from {{ source('core', 'points_ledger') }}
            where effective_at >= {{ since }} and effective_at < {{ as_of_cutoff() }};
        create or replace temp table fct_orders__orders_now as
            select order_id from {{ orders }}
            where customer_id in (select customer_id from fct_orders__customers_now where customer_id is not null)
            union
            select order_id from fct_orders__touched
    {%- elif execute and is_incremental() -%}
        delete from {{ this }}
    {%- endif -%}
{%- endmacro %}


{#- Post-hook, in the build's transaction: record what the table was built from. -#}
{% macro record_fct_orders_built() -%}
    {%- set canonical_runs = fct_orders_relation('core', 'canonical_runs') -%}
    {%- set ledger_changes = fct_orders_relation('core', 'ledger_changes') -%}
    {%- set present = fct_orders_tables_present() -%}
    create or replace table {{ fct_orders_relation('intermediate', 'fct_orders__built') }} as
    select
        '{{ fct_orders_code_fingerprint() if execute else '' }}' as code_fingerprint,
        {% if 'core.canonical_runs' in present -%}
            (select min(fingerprint) from {{ canonical_runs }})
        {%- else -%} null {%- endif %}::varchar as canonical_fingerprint,
        {% if 'core.ledger_changes' in present -%}
            (select coalesce(max(computation), 0) from {{ ledger_changes }})
        {%- else -%} 0 {%- endif %}::bigint as ledger_computation,
        {{ as_of_date() }} as as_of;
    create or replace table {{ fct_orders_relation('intermediate', 'fct_orders__runs') }} as
    {% if 'core.canonical_runs' in present -%}
        select distinct run_id from {{ canonical_runs }}
    {%- else -%}
        select null::varchar as run_id where false
    {%- endif %}
{%- endmacro %}
