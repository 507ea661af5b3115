{#- Helpers for models that recompute only what the current run's silver rows touch. -#}

{% macro current_run_id() -%}
    '{{ var("run_id") | replace("'", "''") }}'
{%- endmacro %}

{#- First column of the first row of a query, at execution time (None while parsing). -#}
{% macro scalar(sql) -%}
    {%- if execute -%}
        {%- set result = run_query(sql) -%}
        {{- return(result.columns[0].values()[0] if result.rows | length > 0 else none) -}}
    {%- endif -%}
    {{- return(none) -}}
{%- endmacro %}

{#- A timestamp(6) with time zone literal for a Python datetime. -#}
{% macro ts_literal(value) -%}
    from_iso8601_timestamp_nanos('{{ value.isoformat() }}')
{%- endmacro %}

{#- A table of this project that is read without becoming a dependency (silver's own
    history, read before the new rows are appended); None when it does not exist. -#}
{% macro existing_relation(layer, identifier) -%}
    {{- return(adapter.get_relation(
        database=target.database,
        schema=generate_schema_name(layer, none),
        identifier=identifier,
    )) -}}
{%- endmacro %}

{#- Hours since the epoch: window frames over hourly rows use it as an ordered key. -#}
{% macro hour_number(column) -%}
    cast(to_unixtime({{ column }}) as bigint) / 3600
{%- endmacro %}
