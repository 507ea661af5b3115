{#- Incremental models, as dbt-trino builds them, with one shortcut for the common
    case. dbt-trino stages every increment as a view (a catalog commit to create it and
    another to drop it) and looks up the columns of both relations up to five times,
    which costs a small run more than its own MERGE. When the table exists, no full
    refresh is asked for and the model's columns cannot have changed (var
    `columns_may_change` false: the runner sets it true whenever the project or the
    registry changed), the increment is read straight from the model's query and only
    the table's columns are looked up. Every other case takes dbt-trino's own path,
    on_schema_change included.

    A model that rewrites only rows from the first hour (or day) of the run's new silver
    rows on says so with `meta={'merge_window': {'column': C, 'grain': 'hour'|'day'}}`
    (`'as_date': true` for a date column): the MERGE then matches only target rows with
    C at or after that bound, so Trino reads the partitions and files from there, not
    the whole table, and a run costs the same on a year of data as on a day.
    `'first_is_new': true` says the model's rows of that first hour (or day) are all
    new (never in the table), and moves the bound one hour (or day) on. -#}
{% materialization incremental, adapter='trino', supported_languages=['sql'] -%}
    {%- set existing = load_cached_relation(this) -%}
    {%- set strategy = config.get('incremental_strategy') or 'default' -%}
    {#- delete+insert names its source twice, so it needs a relation. -#}
    {%- if existing is none or not existing.is_table or should_full_refresh()
        or var('columns_may_change', true) or strategy not in ('default', 'append', 'merge') -%}
        {{- return(dbt.materialization_incremental_trino()) -}}
    {%- endif -%}

    {%- set target = this.incorporate(type='table') -%}
    {%- set strategy_sql = adapter.get_incremental_strategy_macro(context, strategy) -%}
    {%- set predicates = [] + (config.get('incremental_predicates') or []) -%}
    {%- set window = (config.get('meta') or {}).get('merge_window') -%}
    {%- if window and strategy == 'merge' -%}
        {%- set earliest = run_earliest(window['grain']) -%}
        {%- if earliest is none -%}
            {#- No new silver rows: the increment is empty, nothing to match. -#}
            {%- do predicates.append('false') -%}
        {%- else -%}
            {%- set bound = ts_literal(earliest) -%}
            {%- if window.get('first_is_new') -%}
                {#- The model's rows of the first hour (or day) are all new ones: no
                    target row there can match, so none is read. -#}
                {%- set bound = '(' ~ bound ~ " + interval '1' " ~ window['grain'] ~ ')' -%}
            {%- endif -%}
            {%- if window.get('as_date') -%}
                {%- set bound = 'cast(' ~ bound ~ ' as date)' -%}
            {%- endif -%}
            {%- do predicates.append(
                'DBT_INTERNAL_DEST.' ~ adapter.quote(window['column']) ~ ' >= ' ~ bound
            ) -%}
        {%- endif -%}
    {%- endif -%}
    {%- set arguments = {
        'target_relation': target,
        'temp_relation': '(' ~ compiled_code ~ ')',
        'unique_key': config.get('unique_key'),
        'dest_columns': adapter.get_columns_in_relation(existing),
        'incremental_predicates': predicates or none,
    } -%}

    {{ run_hooks(pre_hooks) }}
    {%- call statement('main') -%}
        {{ strategy_sql(arguments) }}
    {%- endcall -%}
    {{ run_hooks(post_hooks) }}
    {% do apply_grants(target, config.get('grants'), should_revoke=true) %}
    {% do persist_docs(target, model) %}
    {{ return({'relations': [target]}) }}
{%- endmaterialization %}
