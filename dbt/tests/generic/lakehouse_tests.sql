{#- Generic tests of the project. -#}

{#- Rows for which `expression` is not true fail the test. -#}
{% test lakehouse_expression_is_true(model, expression, column_name=none) %}
select *
from {{ model }}
where not coalesce({{ expression }}, false)
{% endtest %}

{#- A row with a null in any of `columns` fails the test: one query for the columns a
    model promises are never null (each test is a query, and every run pays for it). -#}
{% test lakehouse_not_null(model, columns) %}
select {{ columns | join(', ') }}
from {{ model }}
where {% for c in columns %}{{ c }} is null{{ ' or ' if not loop.last }}{% endfor %}
{% endtest %}

{#- A column whose non-null values leave [min_value, max_value] fails the test. -#}
{% test lakehouse_accepted_range(model, column_name, min_value=none, max_value=none) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} is not null
  and (
    false
    {%- if min_value is not none %} or {{ column_name }} < {{ min_value }}{% endif %}
    {%- if max_value is not none %} or {{ column_name }} > {{ max_value }}{% endif %}
  )
{% endtest %}

{#- A combination of columns that is not unique (or has a null) fails the test. -#}
{% test lakehouse_unique_key(model, columns) %}
select {{ columns | join(', ') }}, count(*) as occurrences
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
    {%- for c in columns %} or count_if({{ c }} is null) > 0{% endfor %}
{% endtest %}

{#- An event time later than the run's clock plus the tolerance fails the test: such a
    reading is held back in the quarantine until its time has come. -#}
{% test lakehouse_not_ahead_of_the_run(model, column_name) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} > {{ accepted_until() }}
{% endtest %}
