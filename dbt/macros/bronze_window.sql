{#- The bronze rows a run owns. `lakehouse transform` reads the offsets bronze has
    committed (per Kafka partition, atomically with the data) and passes, for each
    partition, the offsets already processed (`after`) and committed (`through`).
    Offsets are row data, so the window survives compaction, and a bronze commit that
    lands while the run is going is simply in the next window. -#}
{% macro bronze_kafka_filter() -%}
    {%- set parts = [] -%}
    {%- for p in var('bronze_window')['kafka'] if p['through'] | int > p['after'] | int -%}
        {%- do parts.append(
            "(source_topic = '" ~ (p['topic'] | replace("'", "''")) ~ "'"
            ~ " and source_partition = " ~ (p['partition'] | int)
            ~ " and source_offset > " ~ (p['after'] | int)
            ~ " and source_offset <= " ~ (p['through'] | int) ~ ")"
        ) -%}
    {%- endfor -%}
    {{ parts | join('\n        or ') if parts else 'false' }}
{%- endmacro %}

{#- Files are ingested whole in one commit, so a file hash is processed or not. -#}
{% macro bronze_file_filter() -%}
    {%- set hashes = var('bronze_window')['files'] -%}
    {%- if hashes -%}
        batch_id in (
        {%- for h in hashes -%}
            '{{ h | replace("'", "''") }}'{{ ", " if not loop.last }}
        {%- endfor -%})
    {%- else -%}
        false
    {%- endif -%}
{%- endmacro %}
