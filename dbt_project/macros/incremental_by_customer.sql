{#-
    Tables incremental by customer: `fct_orders`, `points_reconciliation` (marts/incremental) and
    `int_orders_delivered` (intermediate/incremental), one row per order, each row depending on its order, on
    its customer's orders (and ledger), and on the code. Since the last build, those changed only for:
    - the orders of a canonical run merged since (core.canonical_runs lists the ingest runs whose events the
      canonical tables hold; the orders with an event of a new run are the orders merged again), and every
      order of their customers: identity only ever joins customers (events are added, never taken away), so an
      order relabelled belongs now to a customer with such an order;
    - for a model that reads the ledger (`ledger`), the orders of the customers the ledger computed again
      since (core.ledger_changes, one number per computation: the customers each wrote, or a null customer
      for "everyone");
    - for a model that reads the as-of date (`as_of_window`), the orders of the customers with an order placed
      (or, reading the ledger, a points entry effective) between the two as-of dates.
    A build computes those orders again and writes only the rows that differ from the ones stored (dbt's
    `delete+insert` on order_id, the model selecting its rows `except` the stored ones: often most are the
    same, as the ledger computes a customer again when any entry of theirs may change); the rows of those
    orders that the model no longer makes are deleted. It builds whole (deletes every row) when there is no
    record of the last build, or the code changed, or the canonical tables were merged again under other rules
    (core.canonical_runs' fingerprint), or (reading the ledger) the ledger was computed whole or its changes
    since are no longer all kept, or the as-of date went back. What was built is recorded beside the table,
    in the build's transaction: `intermediate.<model>__built` (one row: the code's fingerprint, the canonical
    fingerprint, the ledger computation and the as-of date) and `intermediate.<model>__runs` (the canonical
    runs). The table is then what a full build makes (tests/test_marts.py).

    A model calls `by_customer_kept(code, ledger)` and, when it is true, reads only the orders in the temp
    table `<model>__orders_now` (and, for the customer's other orders, the customers in
    `<model>__customers_now`); its hooks are `prepare_by_customer(code, ...)` and
    `record_by_customer_built(code)`. `code` is the model's code fingerprint (`by_customer_code_fingerprint`).
-#}

{% macro by_customer_relation(schema, identifier) -%}
    {{- return(api.Relation.create(database=this.database, schema=schema, identifier=identifier)) -}}
{%- endmacro %}


{#-
    The code a row is computed by: the calling model's, the models' `inputs`, and the texts `also`; empty
    before `execute` (the graph is not there yet while dbt parses).
-#}
{% macro by_customer_code_fingerprint(inputs, also=[]) -%}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set texts = also | list -%}
    {%- for name in inputs -%}
        {%- do texts.append(graph.nodes['model.' ~ project_name ~ '.' ~ name].raw_code) -%}
    {%- endfor -%}
    {{- code_fingerprint(texts | join('|')) -}}
{%- endmacro %}


{#-
    Which of the Python steps' bookkeeping tables and this model's records exist, as `schema.table` (an older
    warehouse or a test's may lack some); none before `execute`.
-#}
{% macro by_customer_tables_present() -%}
    {%- if not execute -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set found -%}
        select table_schema || '.' || table_name from information_schema.tables
        where table_catalog = '{{ this.database }}' and (table_schema, table_name) in (
            ('core', 'canonical_runs'), ('core', 'ledger_changes'),
            ('intermediate', '{{ this.identifier }}__built'), ('intermediate', '{{ this.identifier }}__runs')
        )
    {%- endset -%}
    {{ return(run_query(found).columns[0].values() | list) }}
{%- endmacro %}


{#- True on an incremental build that can keep the rows of the orders nothing changed (see above). -#}
{% macro by_customer_kept(code, ledger=true) -%}
    {%- if not (execute and is_incremental()) -%}
        {{ return(false) }}
    {%- endif -%}
    {%- if by_customer_tables_present() | length < 4 -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set canonical_runs = by_customer_relation('core', 'canonical_runs') -%}
    {%- set check -%}
        select
            built.code_fingerprint = '{{ code }}'
            and built.as_of <= {{ as_of_date() }}
            and (select count(distinct fingerprint) from {{ canonical_runs }}) = 1
            and (select min(fingerprint) from {{ canonical_runs }}) = built.canonical_fingerprint
            {%- if ledger %}
            and not exists (
                select 1 from {{ by_customer_relation('core', 'ledger_changes') }}
                where computation > built.ledger_computation and customer_id is null
            )
            {%- endif %}
        from {{ by_customer_relation('intermediate', this.identifier ~ '__built') }} as built
    {%- endset -%}
    {%- set rows = run_query(check).columns[0].values() -%}
    {{ return(rows | length == 1 and rows[0] == true) }}
{%- endmacro %}


{#-
    Pre-hook: on an incremental build that keeps rows, the customers and orders to compute again (temp tables
    `<model>__customers_now`, `<model>__orders_now`, which the model reads: the orders of those customers in
    core.orders and in each of `order_sources`, relations with order_id and customer_id), and the rows of those
    orders that `made_from` (a relation or a subquery with order_id: every order the model makes a row for) no
    longer holds deleted; dbt's delete+insert then replaces the rows that differ. On another incremental
    build, every row deleted.
-#}
{% macro prepare_by_customer(code, ledger=true, as_of_window=false, order_sources=[], made_from=none) -%}
    {%- set prefix = this.identifier -%}
    {%- if by_customer_kept(code, ledger) -%}
        {%- set built = by_customer_relation('intermediate', prefix ~ '__built') -%}
        {%- set orders = source('core', 'orders') -%}
        {%- set since = "(select cast(" ~ dbt.dateadd('day', 1, 'as_of') ~ " as timestamp) from " ~ built ~ ")" -%}
        create or replace temp table {{ prefix }}__touched as
            select distinct order_id from {{ source('core', 'order_events') }}
            where run_id in (
                select run_id from {{ by_customer_relation('core', 'canonical_runs') }}
                except
                select run_id from {{ by_customer_relation('intermediate', prefix ~ '__runs') }}
            );
        create or replace temp table {{ prefix }}__customers_now as
            select customer_id from {{ orders }}
            where order_id in (select order_id from {{ prefix }}__touched)
            {%- if ledger %}
            union
            select customer_id from {{ by_customer_relation('core', 'ledger_changes') }}
            where computation > (select ledger_computation from {{ built }})
            {%- endif %}
            {%- if as_of_window %}
            union
            select customer_id from {{ orders }}
            where placed_at >= {{ since }} and placed_at < {{ as_of_cutoff() }}
            {%- endif %}
            {%- if as_of_window and ledger %}
            union
            select customer_id from {{ source('core', 'points_ledger') }}
            where effective_at >= {{ since }} and effective_at < {{ as_of_cutoff() }}
            {%- endif %};
        create or replace temp table {{ prefix }}__orders_now as
            {%- for relation in [orders] + order_sources %}
            select order_id from {{ relation }}
            where customer_id in (select customer_id from {{ prefix }}__customers_now where customer_id is not null)
            union
            {%- endfor %}
            select order_id from {{ prefix }}__touched
        {%- if made_from is not none -%}
        ;
        delete from {{ this }} as stored
        where stored.order_id in (select order_id from {{ prefix }}__orders_now)
            and not exists (select 1 from {{ made_from }} as made where made.order_id = stored.order_id)
        {%- endif -%}
    {%- elif execute and is_incremental() -%}
        delete from {{ this }}
    {%- endif -%}
{%- endmacro %}


{#-
    The model's last select on an incremental build that keeps rows: its rows (`final`) that differ from the
    stored ones, columns by name (a mart's table has its contract's order) or, for a model without a contract,
    all of them (`columns='*'`: the table has the model's order).
-#}
{% macro by_customer_rows_that_differ(final, columns=none) -%}
    {%- set columns = columns or model.columns.keys() | join(', ') -%}
    select {{ columns }} from {{ final }}
    except
    select {{ columns }} from {{ this }} where order_id in (select order_id from {{ this.identifier }}__orders_now)
{%- endmacro %}


{#- Post-hook, in the build's transaction: record what the table was built from. -#}
{% macro record_by_customer_built(code) -%}
    {%- set canonical_runs = by_customer_relation('core', 'canonical_runs') -%}
    {%- set ledger_changes = by_customer_relation('core', 'ledger_changes') -%}
    {%- set present = by_customer_tables_present() -%}
    create schema if not exists "{{ this.database }}".intermediate;
    create or replace table {{ by_customer_relation('intermediate', this.identifier ~ '__built') }} as
    select
        '{{ code }}' as code_fingerprint,
        {% if 'core.canonical_runs' in present -%}
            (select min(fingerprint) from {{ canonical_runs }})
        {%- else -%} null {%- endif %}::varchar as canonical_fingerprint,
        {% if 'core.ledger_changes' in present -%}
            (select coalesce(max(computation), 0) from {{ ledger_changes }})
        {%- else -%} 0 {%- endif %}::bigint as ledger_computation,
        {{ as_of_date() }} as as_of;
    create or replace table {{ by_customer_relation('intermediate', this.identifier ~ '__runs') }} as
    {% if 'core.canonical_runs' in present -%}
        select distinct run_id from {{ canonical_runs }}
    {%- else -%}
        select null::varchar as run_id where false
    {%- endif %}
{%- endmacro %}


{#-
    fct_orders' code: its own, its inputs' (the points pivot as the macro renders it, the as-of date left out)
    and the reporting currency.
-#}
{% macro fct_orders_code_fingerprint() -%}
    {{- by_customer_code_fingerprint(
        ['stg_core__orders', 'stg_core__points_ledger', 'int_orders_delivered', 'int_points_pivoted_to_orders'],
        [reporting_currency(), pivot_points_to_orders() | replace(as_of_date(), '')]
    ) -}}
{%- endmacro %}


{% macro points_reconciliation_code_fingerprint() -%}
    {{- by_customer_code_fingerprint(['stg_core__orders', 'stg_core__points_reconciliation']) -}}
{%- endmacro %}


{% macro int_orders_delivered_code_fingerprint() -%}
    {{- by_customer_code_fingerprint(['stg_core__orders']) -}}
{%- endmacro %}


{#- The orders int_orders_delivered makes a row for (its filter, over core.orders). -#}
{% macro delivered_order_ids() -%}
    select order_id from {{ source('core', 'orders') }}
    where status = 'delivered' and placed_at < {{ as_of_cutoff() }}
{%- endmacro %}
