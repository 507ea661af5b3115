# syntax=docker/dockerfile:1
# Superset with the platform's config and dashboards. Build from the repository root:
#   docker build -f compose/superset.Dockerfile -t lakehouse-superset:0.1.0 .
ARG SUPERSET_IMAGE=docker.io/apache/superset:6.1.0

FROM ${SUPERSET_IMAGE}
USER root
# The Trino driver the lake's database connection uses.
RUN uv pip install --no-cache --python /app/.venv/bin/python "trino[sqlalchemy]>=0.330,<1"
COPY --chown=1000:1000 superset /app/lakehouse/superset
USER 1000:1000
