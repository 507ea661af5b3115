{#- This run's bronze rows, each with the first silver rule it fails (null: valid).
    Rules, in order: unknown_device, tenant_mismatch, ts_in_future, ts_before_device,
    unknown_metric, unknown_unit, value_out_of_range, duplicate. A valid reading is
    converted to its metric's canonical unit (seeds metric_ranges, unit_conversions);
    a quarantined one keeps the value and unit it arrived with. A duplicate is a valid reading whose (device_id, seq)
    is already in silver or arrived earlier in this window; the first arrival wins.
    When the registry changed since the last run, the quarantined readings that failed
    a rule about the registry are examined again with the bronze rows (a device
    registered late gets its early readings back; readings_quarantine replaces them).
    ts_in_future holds back a reading stamped later than the run's clock plus
    max_future_minutes; every run examines again those whose time has come, so a device
    whose clock runs ahead has its readings delayed, never dropped. -#}
{{ config(materialized='table') }}

{%- set published = none if flags.FULL_REFRESH else existing_relation('silver', 'readings') %}
{%- set quarantined = none if flags.FULL_REFRESH
    else existing_relation('silver', 'readings_quarantine') %}
{%- set reexamine = quarantined and registry_changed() %}
{%- set columns = "device_id, tenant, site, seq, ts, metric, value, unit, attrs, ingested_at, "
    ~ "source, source_topic, source_partition, source_offset, batch_id, source_file, source_line" %}

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
    select {{ columns }}
    from {{ quarantined }}
    where failed_rule in ({{ registry_rules() }}) or ({{ held_back_due() }})
    {%- elif quarantined %}
    union all
    select {{ columns }}
    from {{ quarantined }}
    where {{ held_back_due() }}
    {%- endif %}
),

devices as (
    select device_id, tenant, created_at from {{ ref('dim_device') }}
),

ranges as (
    select metric, unit, min_value, max_value from {{ ref('metric_ranges') }}
),

conversions as (
    select unit, canonical_unit, scale, shift from {{ ref('unit_conversions') }}
),

converted as (
    select
        i.*,
        r.metric as known_metric,
        r.unit as canonical_unit,
        r.min_value,
        r.max_value,
        case
            when i.unit is null or i.unit = r.unit then i.value
            else i.value * u.scale + u.shift
        end as canonical_value
    from increment as i
    left join ranges as r on r.metric = i.metric
    left join conversions as u on u.unit = i.unit and u.canonical_unit = r.unit
),

checked as (
    select
        c.device_id, c.tenant, c.site, c.seq, c.ts, c.metric,
        coalesce(c.canonical_value, c.value) as value,
        coalesce(c.canonical_unit, c.unit) as unit,
        c.attrs, c.ingested_at, c.source, c.source_topic, c.source_partition,
        c.source_offset, c.batch_id, c.source_file, c.source_line,
        c.value as value_received,
        c.unit as unit_received,
        case
            when d.device_id is null then 'unknown_device'
            when d.tenant <> c.tenant then 'tenant_mismatch'
            when c.ts > {{ accepted_until() }} then 'ts_in_future'
            when c.ts < d.created_at then 'ts_before_device'
            when c.known_metric is null then 'unknown_metric'
            when c.canonical_value is null then 'unknown_unit'
            when c.canonical_value < c.min_value or c.canonical_value > c.max_value
                then 'value_out_of_range'
        end as rule_failed
    from converted as c
    left join devices as d on d.device_id = c.device_id
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
        device_id, tenant, site, seq, ts, metric, value_received as value,
        unit_received as unit, attrs,
        ingested_at, source, source_topic, source_partition, source_offset,
        batch_id, source_file, source_line,
        rule_failed as failed_rule
    from checked
    where rule_failed is not null
    union all
    select
        v.device_id, v.tenant, v.site, v.seq, v.ts, v.metric,
        -- A duplicate goes to the quarantine as it arrived, like every other reject.
        if(v.arrival > 1 {%- if published %} or p.device_id is not null{% endif %},
           v.value_received, v.value) as value,
        if(v.arrival > 1 {%- if published %} or p.device_id is not null{% endif %},
           v.unit_received, v.unit) as unit,
        v.attrs,
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
