{#- Bronze rows that failed a silver rule, with the rule's name. When the registry
    changed, readings_checked examined the rows of the registry's rules again: they are
    deleted here first, and those still failing come back with this run's verdict. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    properties={"partitioning": "ARRAY['day(ingested_at)']"},
    pre_hook="{{ forget_reexamined_quarantine() }}",
) }}

with checked as (
    select * from {{ ref('readings_checked') }}
),

final as (
    select
        device_id, tenant, site, seq, ts, metric, value, unit, attrs,
        ingested_at, source, source_topic, source_partition, source_offset,
        batch_id, source_file, source_line,
        failed_rule,
        cast({{ current_run_id() }} as varchar) as run_id
    from checked
    where failed_rule is not null
)

select * from final
