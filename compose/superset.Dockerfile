# syntax=docker/dockerfile:1
# Superset with the platform's config and dashboards, installed from PyPI as the native
# stack installs it (compose/superset-requirements.txt), on the same Python base as the
# platform's image. Build from the repository root:
#   docker build -f compose/superset.Dockerfile -t lakehouse-superset:0.1.0 .
# Every Python package comes at the version compose/superset-constraints.txt names.
ARG PYTHON_IMAGE=docker.io/library/python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY compose/superset-requirements.txt compose/superset-constraints.txt /src/
RUN python -m venv /app/.venv \
    && /app/.venv/bin/pip install --constraint /src/superset-constraints.txt \
       --requirement /src/superset-requirements.txt \
    && /app/.venv/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 1000 superset \
    && useradd --system --uid 1000 --gid 1000 --no-create-home --home-dir /app/superset_home \
       --shell /usr/sbin/nologin superset \
    && install -d -o 1000 -g 1000 -m 0700 /app/superset_home
COPY --from=build /app/.venv /app/.venv
COPY superset /app/lakehouse/superset
# The health check compose runs (the standard library only; no curl in this image).
COPY lakehouse/probe.py /app/lakehouse/probe.py
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SUPERSET_HOME=/app/superset_home
USER 1000:1000
WORKDIR /app/superset_home
