{#- This run's bronze rows, each with the first silver rule it fails (null: valid).
    Rules, in order: unknown_device, tenant_mismatch, ts_in_future, ts_before_device,
    value_out_of_range, duplicate. A duplicate is a valid reading whose (device_id, seq)
    is already in silver or arrived earlier in this window; the first arrival wins.
    When the registry changed since the last run, the quarantined readings that failed
    a rule about the registry are examined again with the bronze rows (a device
    registered late gets its early readings back; readings_quarantine replaces them). -#}
{{ config(materialized='table') }}

{%- set published = none if flags.FULL_REFRESH else existing_relation('silver', 'readings') %}
{%- set quarantined = none if flags.FULL_REFRESH
    else existing_relation('silver', 'readings_quarantine') %}
{%- set reexamine = quarantined and registry_changed() %}

with bronze as (
    select * from {{ source('bronze', 'readings') }}
),

increment as (
    select * from bronze
    where source_topic is not null
      and ({{ bronze_kafka_filter() }})
    union all
    select * from bronze
    where source_topic is null
      and {{ bronze_file_filter() }}
    {%- if reexamine %}
    union all
    select
        device_id, tenant, site, seq, ts, metric, value, unit, attrs,
        ingested_at, source, source_topic, source_partition, source_offset,
        batch_id, source_file, source_line
    from {{ quarantined }}
    where failed_rule in ({{ registry_rules() }})
    {%- endif %}
),

devices as (
    select device_id, tenant, created_at from {{ ref('dim_device') }}
),

ranges as (
    select metric, min_value, max_value from {{ ref('metric_ranges') }}
),

checked as (
    select
        i.*,
        case
            when d.device_id is null then 'unknown_device'
            when d.tenant <> i.tenant then 'tenant_mismatch'
            when i.ts > i.ingested_at + interval '{{ var("max_future_minutes") | int }}' minute
                then 'ts_in_future'
            when i.ts < d.created_at then 'ts_before_device'
            when i.value < r.min_value or i.value > r.max_value then 'value_out_of_range'
        end as rule_failed
    from increment as i
    left join devices as d on d.device_id = i.device_id
    left join ranges as r on r.metric = i.metric
),

valid_ranked as (
    select
        c.*,
        row_number() over (
            partition by c.device_id, c.seq
            order by c.ingested_at, c.source_partition, c.source_offset, c.source_line
        ) as arrival
    from checked as c
    where c.rule_failed is null
),

{% if published %}
already_published as (
    select s.device_id, s.seq
    from {{ published }} as s
    inner join (select distinct device_id, seq from valid_ranked) as v
        on v.device_id = s.device_id and v.seq = s.seq
),
{% endif %}

final as (
    select
        device_id, tenant, site, seq, ts, metric, value, unit, attrs,
        ingested_at, source, source_topic, source_partition, source_offset,
        batch_id, source_file, source_line,
        rule_failed as failed_rule
    from checked
    where rule_failed is not null
    union all
    select
        v.device_id, v.tenant, v.site, v.seq, v.ts, v.metric, v.value, v.unit, v.attrs,
        v.ingested_at, v.source, v.source_topic, v.source_partition, v.source_offset,
        v.batch_id, v.source_file, v.source_line,
        case
            when v.arrival > 1 then 'duplicate'
            {%- if published %}
            when p.device_id is not null then 'duplicate'
            {%- endif %}
        end as failed_rule
    from valid_ranked as v
    {%- if published %}
    left join already_published as p on p.device_id = v.device_id and p.seq = v.seq
    {%- endif %}
)

select * from final
