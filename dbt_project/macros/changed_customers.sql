{#-
    Incremental models by changed customer (tag `by_changed_customers`): models whose rows are each one
    customer's and depend only on that customer's orders and ledger (fct_orders, points_reconciliation,
    int_orders_delivered, int_points_pivoted_to_orders). Diffing them against their inputs would cost as much as
    building them, so the Python steps log instead what they change: every write of core.orders (canonical) or
    of the ledger appends a step to core.change_steps and its customers to core.changed_customers, or marks a
    step `everything` (a full computation; pipelines/warehouse.py `log_changed_customers`).

    A build records, beside the model (`intermediate.<model>__changes_built`, in the build's transaction), the
    last step it has seen, its as-of date, the ledger's and its code's fingerprint. The next build keeps the rows
    of the customers not logged since (`changes_kept`) when:
    - the record is there, made after at least one logged step (a core written by hand logs nothing);
    - the code of the model and of every model or seed above it is the same;
    - no step since marks everything;
    - the as-of date is the ledger's, now and when recorded: the ledger's steps then cover what the passing
      of time changes (orders placed or entries effective between the two as-of dates are its customers).
    Else the table is emptied and built whole. Either way the table is what a full build makes.
-#}

{% macro change_log(name) -%}
    {{- return(api.Relation.create(database=this.database, schema='core', identifier=name)) -}}
{%- endmacro %}


{% macro changes_record() -%}
    {{- return(api.Relation.create(
        database=this.database, schema='intermediate', identifier=this.identifier ~ '__changes_built'
    )) -}}
{%- endmacro %}


{#- Temp tables of the build's own connection: the last step seen (`now`) and the customers to build. -#}
{% macro changes_temp(name) -%}
    {{- this.identifier ~ '__changes_' ~ name -}}
{%- endmacro %}


{#-
    The checksums of the calling model's file and of every model and seed above it, with the rules vars (a new
    rule builds them whole; it makes the ledger compute every customer anyway).
-#}
{% macro changes_code_fingerprint() -%}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set rules = {} -%}
    {%- for name in ['rfm_window_days', 'rfm_frequency_bins', 'redeem_points_per_unit', 'reporting_currency', 'tiers'] -%}
        {%- do rules.update({name: var(name)}) -%}
    {%- endfor -%}
    {{- local_md5(ancestry_checksums(model.unique_id) ~ tojson(rules, sort_keys=true)) -}}
{%- endmacro %}


{% macro ancestry_checksums(unique_id) -%}
    {%- set node = graph.nodes.get(unique_id) -%}
    {%- if node is none -%}
        {{ return('') }}
    {%- endif -%}
    {%- set parts = [unique_id ~ '=' ~ node.checksum.checksum] -%}
    {%- for parent in node.depends_on.nodes | sort -%}
        {%- do parts.append(ancestry_checksums(parent)) -%}
    {%- endfor -%}
    {{ return(parts | join(';')) }}
{%- endmacro %}


{#- Which of the change log's tables, the ledger's run and the record exist (a set of names). -#}
{% macro changes_tables_found() -%}
    {%- set record = changes_record() -%}
    {%- set found -%}
        select table_schema || '.' || table_name from information_schema.tables
        where table_catalog = '{{ this.database }}'
            and (
                (table_schema = 'core' and table_name in ('change_steps', 'changed_customers', 'ledger_runs'))
                or (table_schema = '{{ record.schema }}' and table_name = '{{ record.identifier }}')
            )
    {%- endset -%}
    {{ return(run_query(found).columns[0].values() | list) }}
{%- endmacro %}


{#- True on an incremental build that may keep the rows of the customers not logged since the last one. -#}
{% macro changes_kept() -%}
    {%- if not (execute and is_incremental()) -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set record = changes_record() -%}
    {%- if changes_tables_found() | length < 4 -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set check -%}
        select count(*) from {{ record }} as built
        where built.change_id > 0
            and built.change_id <= (select coalesce(max(change_id), 0) from {{ change_log('change_steps') }})
            and built.fingerprint = '{{ changes_code_fingerprint() }}'
            and built.as_of = built.ledger_as_of
            and built.as_of <= {{ as_of_date() }}
            and (select max(as_of) from {{ change_log('ledger_runs') }}) = {{ as_of_date() }}
            and not exists (
                select 1 from {{ change_log('change_steps') }} as steps
                where steps.everything and steps.change_id > built.change_id
            )
    {%- endset -%}
    {{ return(run_query(check).columns[0].values()[0] == 1) }}
{%- endmacro %}


{#-
    Pre-hook: the last step logged, then, on an incremental build, delete the rows of the customers logged since
    the last build (every row when it cannot keep any).
-#}
{% macro prepare_changed_customers() -%}
    {%- set found = changes_tables_found() if execute else [] -%}
    create or replace temp table {{ changes_temp('now') }} as
    {% if 'core.change_steps' in found -%}
        select coalesce(max(change_id), 0) as change_id from {{ change_log('change_steps') }};
    {%- else -%}
        select cast(0 as bigint) as change_id;
    {%- endif %}
    {% if changes_kept() -%}
        create or replace temp table {{ changes_temp('customers') }} as
            select distinct customer_id from {{ change_log('changed_customers') }}
            where change_id > (select change_id from {{ changes_record() }});
        delete from {{ this }} where {{ customer_changed('customer_id') }}
    {%- elif execute and is_incremental() -%}
        {%- set columns = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
        {%- if 'customer_id' not in columns -%}
            {#- a table from before the column (int_points_pivoted_to_orders): added first, as DuckDB refuses to
                alter a table this transaction already changed (the schema change would come after the delete) -#}
            alter table {{ this }} add column customer_id {{ dbt.type_string() }};
        {%- endif %}
        delete from {{ this }}
    {%- endif -%}
{%- endmacro %}


{#-
    A condition on `column`: the customer was logged since the last build (null: the orders without one). Not a
    correlated `exists`: inside it an unqualified column would name the log's own.
-#}
{% macro customer_changed(column) -%}
    (
        {{ column }} in (select customer_id from {{ changes_temp('customers') }})
        or (
            {{ column }} is null
            and exists (select 1 from {{ changes_temp('customers') }} as changed where changed.customer_id is null)
        )
    )
{%- endmacro %}


{#- The read side: a `where` clause keeping the changed customers' rows on an incremental build. -#}
{% macro where_customer_changed(column='customer_id') -%}
    {%- if changes_kept() -%}
        where {{ customer_changed(column) }}
    {%- endif -%}
{%- endmacro %}


{#- Post-hook, in the build's transaction: record what the table now holds. -#}
{% macro record_changes_built() -%}
    {%- set found = changes_tables_found() if execute else [] -%}
    create schema if not exists {{ changes_record().schema }};
    create or replace table {{ changes_record() }} as
    select
        now.change_id,
        {{ as_of_date() }} as as_of,
        {% if 'core.ledger_runs' in found -%}
            (select max(as_of) from {{ change_log('ledger_runs') }})
        {%- else -%}
            cast(null as date)
        {%- endif %} as ledger_as_of,
        '{{ changes_code_fingerprint() }}' as fingerprint
    from {{ changes_temp('now') }} as now
{%- endmacro %}


{#-
    on-run-end: the log's customers every such model has seen are dropped (only when every one has a record:
    a model never built keeps the log whole).
-#}
{% macro prune_change_log() -%}
    {%- if execute -%}
        {%- set records = [] -%}
        {%- for node in graph.nodes.values()
            if node.resource_type == 'model' and 'by_changed_customers' in node.tags -%}
            {%- do records.append(node.name ~ '__changes_built') -%}
        {%- endfor -%}
        {%- set found -%}
            select count(*) from information_schema.tables
            where table_catalog = '{{ target.database }}' and table_schema = 'intermediate'
                and table_name in ('{{ records | join("', '") }}')
        {%- endset -%}
        {%- set logged -%}
            select count(*) from information_schema.tables
            where table_catalog = '{{ target.database }}' and table_schema = 'core'
                and table_name = 'changed_customers'
        {%- endset -%}
        {%- if records and run_query(found).columns[0].values()[0] == records | length
            and run_query(logged).columns[0].values()[0] == 1 -%}
            delete from {{ target.database }}.core.changed_customers
            where change_id <= (
                select min(change_id) from (
                    {%- for record in records %}
                    {% if not loop.first %}union all {% endif -%}
                    select change_id from {{ target.database }}.intermediate.{{ record }}
                    {%- endfor %}
                )
            )
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
