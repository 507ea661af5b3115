{#- The quarantine rules that depend on the registry: a device registered, moved to
    another tenant or back-dated later can turn these readings valid. -#}
{% macro registry_rules() -%}
    'unknown_device', 'tenant_mismatch', 'ts_before_device'
{%- endmacro %}

{#- Whether the registry changed since the last published run (see lakehouse.transform). -#}
{% macro registry_changed() -%}
    {{- return(var('bronze_window').get('registry_changed', false)) -}}
{%- endmacro %}

{#- Pre-hook of readings_quarantine: on an incremental run, delete the rows
    readings_checked examined again (it re-emits those still failing): the held-back
    readings whose time has come, and after a registry change the registry's rules. -#}
{% macro forget_reexamined_quarantine() -%}
    {%- if is_incremental() and registry_changed() -%}
        delete from {{ this }}
        where failed_rule in ({{ registry_rules() }}) or ({{ held_back_due() }})
    {%- elif is_incremental() -%}
        delete from {{ this }} where {{ held_back_due() }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{#- The run's clock, from `lakehouse transform` (the current time under a bare dbt). -#}
{% macro run_now() -%}
    {%- set now = var('bronze_window').get('now') -%}
    {%- if now -%}
        from_iso8601_timestamp_nanos('{{ now }}')
    {%- else -%}
        current_timestamp
    {%- endif -%}
{%- endmacro %}

{#- The latest event time silver accepts now: a device clock a little ahead is tolerated. -#}
{% macro accepted_until() -%}
    {{ run_now() }} + interval '{{ var("max_future_minutes") | int }}' minute
{%- endmacro %}

{#- Quarantined readings stamped ahead of the clock whose time has come: every run
    examines them again (the gateway refuses readings more than a day ahead, so none
    waits longer than that). -#}
{% macro held_back_due() -%}
    failed_rule = 'ts_in_future' and ts <= {{ accepted_until() }}
{%- endmacro %}
