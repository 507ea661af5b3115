{#- Per run, the series (device, site, metric) its new silver rows belong to and the
    first and last hour they span: what the serving publish replaces, without reading
    silver again. Appended by every run, published with the run. -#}
{{ config(materialized='incremental', incremental_strategy='append') }}

with new_rows as (
    select device_id, site, metric, date_trunc('hour', ts) as hour
    from {{ ref('readings') }}
    where run_id = {{ current_run_id() }}
),

final as (
    select
        cast({{ current_run_id() }} as varchar) as run_id,
        device_id,
        site,
        metric,
        min(hour) as first_hour,
        max(hour) as last_hour
    from new_rows
    group by device_id, site, metric
)

select * from final
