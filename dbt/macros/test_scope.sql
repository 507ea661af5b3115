{#- What a data test sees. A transform run tests what it wrote (var test_scope = 'run'):
    the rows of the tables below that carry its run id, and bronze's rows in its window.
    Its fixed cost then follows the new data, not the size of the tables. The scheduled
    audit (`lakehouse transform audit`, test_scope = 'all') tests every row of main.
    The other tables are small (dimensions, progress, device health) and tested whole.
    dbt calls this macro for the table under test of every generic test. -#}
{% macro get_where_subquery(relation) -%}
    {%- set conditions = [] -%}
    {%- set where = config.get('where') -%}
    {%- if where -%}
        {%- do conditions.append(where) -%}
    {%- endif -%}
    {%- if var('test_scope', 'run') == 'run' -%}
        {%- set scope = run_scope(relation) -%}
        {%- if scope -%}
            {%- do conditions.append(scope) -%}
        {%- endif -%}
    {%- endif -%}
    {%- if conditions -%}
        {%- do return("(select * from " ~ relation ~ " where (" ~ conditions | join(") and (")
            ~ ")) dbt_subquery") -%}
    {%- endif -%}
    {%- do return(relation) -%}
{%- endmacro %}

{#- The rows of `relation` the current run wrote, as a predicate; none: test it whole. -#}
{% macro run_scope(relation) -%}
    {%- set written_by_run = {
        'silver': ['readings', 'readings_quarantine'],
        'internal': ['run_series', 'hour_baselines'],
        'gold': ['fct_device_hourly', 'fct_site_daily'],
        'platinum': ['device_features', 'anomaly_scores'],
    } -%}
    {%- set prefix = var('schema_prefix', '') -%}
    {%- set schema = relation.schema or '' -%}
    {%- set layer = schema[prefix | length:] if schema.startswith(prefix) else none -%}
    {%- if layer == 'bronze' and relation.identifier == 'readings' -%}
        {%- do return(
            "(source_topic is not null and (" ~ bronze_kafka_filter() ~ "))"
            ~ " or (source_topic is null and " ~ bronze_file_filter() ~ ")"
        ) -%}
    {%- elif relation.identifier in written_by_run.get(layer, []) -%}
        {%- do return("run_id = " ~ current_run_id()) -%}
    {%- endif -%}
    {%- do return(none) -%}
{%- endmacro %}
