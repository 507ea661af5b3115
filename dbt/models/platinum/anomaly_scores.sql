{#- Robust z-score of every reading against its device, metric and hour:
        z = 0.6745 * (value - median) / MAD
    (Iglewicz and Hoaglin's modified z-score; MAD is the median absolute deviation).
    When MAD is 0 the mean absolute deviation is used instead, z = (value - median) /
    (1.2533 * meanAD), and z = 0 when that is 0 too. Hours with fewer than 3 readings
    are not scored. is_anomaly: |z| > 3.5. Medians are exact (middle rows). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['device_id', 'seq'],
    properties={"partitioning": "ARRAY['day(ts)']"},
) }}

with readings as (
    select device_id, tenant, site, seq, metric, ts, value, run_id
    from {{ ref('readings') }}
),

{% if is_incremental() %}
{%- set earliest = scalar(
    "select min(date_trunc('hour', ts)) from " ~ ref('readings')
    ~ " where run_id = " ~ current_run_id()
) %}
touched as (
    select distinct device_id, metric, date_trunc('hour', ts) as hour
    from readings
    where run_id = {{ current_run_id() }}
),

scoped as (
    select r.*, date_trunc('hour', r.ts) as hour
    from readings as r
    inner join touched as t
        on t.device_id = r.device_id
        and t.metric = r.metric
        and t.hour = date_trunc('hour', r.ts)
    {%- if earliest is not none %}
    where r.ts >= {{ ts_literal(earliest) }}
    {%- else %}
    where false
    {%- endif %}
),
{% else %}
scoped as (
    select *, date_trunc('hour', ts) as hour from readings
),
{% endif %}

ranked as (
    select
        *,
        row_number() over (partition by device_id, metric, hour order by value) as value_rank,
        count(*) over (partition by device_id, metric, hour) as readings_in_hour
    from scoped
),

medians as (
    select device_id, metric, hour, avg(value) as baseline_median
    from ranked
    where value_rank in ((readings_in_hour + 1) / 2, (readings_in_hour + 2) / 2)
    group by device_id, metric, hour
),

deviations as (
    select
        r.*,
        m.baseline_median,
        abs(r.value - m.baseline_median) as abs_deviation
    from ranked as r
    inner join medians as m
        on m.device_id = r.device_id and m.metric = r.metric and m.hour = r.hour
),

deviation_ranked as (
    select
        *,
        row_number() over (partition by device_id, metric, hour order by abs_deviation)
            as deviation_rank,
        avg(abs_deviation) over (partition by device_id, metric, hour) as mean_abs_deviation
    from deviations
),

mads as (
    select device_id, metric, hour, avg(abs_deviation) as baseline_mad
    from deviation_ranked
    where deviation_rank in ((readings_in_hour + 1) / 2, (readings_in_hour + 2) / 2)
    group by device_id, metric, hour
),

scored as (
    select
        d.device_id,
        d.tenant,
        d.site,
        d.seq,
        d.metric,
        d.ts,
        d.hour,
        d.value,
        d.readings_in_hour,
        d.baseline_median,
        m.baseline_mad,
        case
            when d.readings_in_hour < 3 then null
            when m.baseline_mad > 0 then 0.6745e0 * (d.value - d.baseline_median) / m.baseline_mad
            when d.mean_abs_deviation > 0
                then (d.value - d.baseline_median) / (1.2533e0 * d.mean_abs_deviation)
            else 0e0
        end as robust_z
    from deviation_ranked as d
    inner join mads as m
        on m.device_id = d.device_id and m.metric = d.metric and m.hour = d.hour
),

final as (
    select
        *,
        coalesce(abs(robust_z) > 3.5e0, false) as is_anomaly
    from scored
)

select * from final
