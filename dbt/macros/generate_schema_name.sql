{#- Layers live in schemas named after them (silver, gold, platinum; the pipeline's
    work tables in `internal`), not `<target>_<layer>`; `schema_prefix` isolates a
    whole environment. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ var('schema_prefix', '') ~ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
