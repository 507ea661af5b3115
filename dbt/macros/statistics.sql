{#- Sample standard deviation from a count, a sum and a sum of squares (null below 2). -#}
{% macro stddev_from_sums(n, total, total_sq) -%}
    case when {{ n }} > 1 then sqrt(greatest(
        ({{ total_sq }} - {{ total }} * {{ total }} / {{ n }}) / ({{ n }} - 1), 0e0)) end
{%- endmacro %}

{#- Median of a sorted array of n values: its middle value, or the mean of the two. -#}
{% macro middle_value(sorted_values, n) -%}
    (element_at({{ sorted_values }}, ({{ n }} + 1) / 2)
        + element_at({{ sorted_values }}, ({{ n }} + 2) / 2)) / 2
{%- endmacro %}
