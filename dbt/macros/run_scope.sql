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

{#- Earliest `grain` (hour, day) of the current run's new silver rows; None if it has none. -#}
{% macro run_earliest(grain) -%}
    {{- return(scalar(
        "select min(date_trunc('" ~ grain ~ "', ts)) from " ~ ref('readings')
        ~ " where run_id = " ~ current_run_id()
    )) -}}
{%- endmacro %}

{#- Silver readings with their `hour`: those of every (device, metric, hour) the current
    run's new rows fall in, or all of them when the model is built in full. -#}
{% macro readings_of_touched_hours() -%}
    {%- if is_incremental() -%}
        {%- set earliest = run_earliest('hour') %}
    select r.*, date_trunc('hour', r.ts) as hour
    from {{ ref('readings') }} as r
    inner join (
        select distinct device_id, metric, date_trunc('hour', ts) as hour
        from {{ ref('readings') }}
        where run_id = {{ current_run_id() }}
    ) as t
        on t.device_id = r.device_id
        and t.metric = r.metric
        and t.hour = date_trunc('hour', r.ts)
        {%- if earliest is not none %}
    where r.ts >= {{ ts_literal(earliest) }}
        {%- else %}
    where false
        {%- endif %}
    {%- else %}
    select *, date_trunc('hour', ts) as hour from {{ ref('readings') }}
    {%- endif %}
{%- endmacro %}

{#- First and last hour of the current run's new silver rows: [earliest, latest], or
    [None, None] when it has none. -#}
{% macro run_hour_bounds() -%}
    {%- if execute -%}
        {%- set result = run_query(
            "select min(date_trunc('hour', ts)), max(date_trunc('hour', ts)) from "
            ~ ref('readings') ~ " where run_id = " ~ current_run_id()
        ) -%}
        {%- if result.rows | length > 0 -%}
            {{- return([result.rows[0][0], result.rows[0][1]]) -}}
        {%- endif -%}
    {%- endif -%}
    {{- return([none, none]) -}}
{%- endmacro %}

{#- The (device, metric) series the current run's new silver rows belong to. -#}
{% macro touched_series() -%}
    select distinct device_id, metric
    from {{ ref('readings') }}
    where run_id = {{ current_run_id() }}
{%- endmacro %}
