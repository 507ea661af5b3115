{#- The quarantine rules that depend on the registry: a device registered, moved to
    another tenant or back-dated later can turn these readings valid. -#}
{% macro registry_rules() -%}
    'unknown_device', 'tenant_mismatch', 'ts_before_device'
{%- endmacro %}

{#- Whether the registry changed since the last published run (see lakehouse.transform). -#}
{% macro registry_changed() -%}
    {{- return(var('bronze_window').get('registry_changed', false)) -}}
{%- endmacro %}

{#- Pre-hook of readings_quarantine: on an incremental run after a registry change,
    delete the rows readings_checked examined again (it re-emits those still failing). -#}
{% macro forget_reexamined_quarantine() -%}
    {%- if is_incremental() and registry_changed() -%}
        delete from {{ this }} where failed_rule in ({{ registry_rules() }})
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
