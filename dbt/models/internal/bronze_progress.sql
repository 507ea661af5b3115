{#- How far silver has processed bronze: per Kafka partition the last offset, per
    ingested file its hash, and the versions of the registry and of this project the
    reference tables were built from. Published with
    silver in the same merge, so the next run
    starts exactly where this one ended. -#}
{{ config(materialized='incremental', incremental_strategy='merge', unique_key='stream') }}

-- depends_on: {{ ref('readings') }}
-- depends_on: {{ ref('readings_quarantine') }}

{%- set window = var('bronze_window') %}

with kafka_positions as (
    {%- for p in window['kafka'] %}
    select
        cast('kafka:{{ p["topic"] | replace("'", "''") }}:{{ p["partition"] | int }}' as varchar)
            as stream,
        cast({{ p["through"] | int }} as bigint) as position
    {{ "union all" if not loop.last }}
    {%- else %}
    select cast(null as varchar) as stream, cast(null as bigint) as position where false
    {%- endfor %}
),

file_positions as (
    {%- for h in window['files'] %}
    select cast('file:{{ h | replace("'", "''") }}' as varchar) as stream, cast(null as bigint) as position
    {{ "union all" if not loop.last }}
    {%- else %}
    select cast(null as varchar) as stream, cast(null as bigint) as position where false
    {%- endfor %}
),

reference_versions as (
    -- The registry and project versions the reference tables were built from.
    select cast('registry' as varchar) as stream, cast({{ window.get('registry', 0) | int }} as bigint) as position
    union all
    select cast('project' as varchar) as stream, cast({{ window.get('project', 0) | int }} as bigint) as position
),

final as (
    select stream, position, cast({{ current_run_id() }} as varchar) as run_id
    from kafka_positions
    union all
    select stream, position, cast({{ current_run_id() }} as varchar) as run_id
    from reference_versions
    union all
    select stream, position, cast({{ current_run_id() }} as varchar) as run_id
    from file_positions
)

select * from final
