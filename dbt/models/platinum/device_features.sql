{#- ML features per device, metric and hour (the hour's own rows are the 1 h window;
    the 24 h window is the 24 clock hours ending with it). lag_1h is the mean of the
    hour before (null when that hour is silent) and rate_of_change_1h the difference
    to it; missing_ratio_24h is the share of the 24 hours without a reading. An
    incremental run recomputes the hours its new rows fall in and the 23 after. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    on_schema_change='append_new_columns',
    unique_key=['device_id', 'metric', 'hour'],
    meta={'merge_window': {'column': 'hour', 'grain': 'hour'}},
    properties={"partitioning": "ARRAY['month(hour)']"},
) }}

-- depends_on: {{ ref('readings') }}

with hourly as (
    select * from {{ ref('fct_device_hourly') }}
),

{% if is_incremental() %}
{%- set earliest, latest = run_hour_bounds() %}
touched_series as (
    {{ touched_series() }}
),

scoped as (
    select h.*
    from hourly as h
    inner join touched_series as t on t.device_id = h.device_id and t.metric = h.metric
    {%- if earliest is not none %}
    where h.hour >= {{ ts_literal(earliest) }} - interval '23' hour
      and h.hour <= {{ ts_literal(latest) }} + interval '23' hour
    {%- else %}
    where false
    {%- endif %}
),
{% else %}
scoped as (
    select * from hourly
),
{% endif %}

windowed as (
    select
        device_id,
        tenant,
        site,
        metric,
        hour,
        readings as readings_1h,
        value_avg as mean_1h,
        value_stddev as stddev_1h,
        sum(readings) over last_24h as readings_24h,
        sum(value_sum) over last_24h as sum_24h,
        sum(value_sum_sq) over last_24h as sum_sq_24h,
        count(*) over last_24h as active_hours_24h,
        max(value_avg) over hour_before as lag_1h
    from scoped
    window
        last_24h as (
            partition by device_id, metric order by {{ hour_number('hour') }}
            range between 23 preceding and current row
        ),
        hour_before as (
            partition by device_id, metric order by {{ hour_number('hour') }}
            range between 1 preceding and 1 preceding
        )
),

final as (
    select
        device_id,
        tenant,
        site,
        metric,
        hour,
        readings_1h,
        mean_1h,
        stddev_1h,
        readings_24h,
        sum_24h / readings_24h as mean_24h,
        {{ stddev_from_sums('readings_24h', 'sum_24h', 'sum_sq_24h') }} as stddev_24h,
        lag_1h,
        mean_1h - lag_1h as rate_of_change_1h,
        1e0 - active_hours_24h / 24e0 as missing_ratio_24h,
        cast({{ current_run_id() }} as varchar) as run_id
    from windowed
    {%- if is_incremental() and earliest is not none %}
    where hour >= {{ ts_literal(earliest) }}
    {%- endif %}
)

select * from final
