#!/usr/bin/env bash
# Writes compose/constraints.txt and compose/superset-constraints.txt: the exact versions
# of every package the platform's image and Superset's install (compose/Dockerfile and
# compose/superset.Dockerfile install with them), so two builds of one commit hold the
# same code. Run it (`make lock`) after changing dependencies in pyproject.toml,
# edge_agent/pyproject.toml or superset.Dockerfile; the image tests fail while a file
# and its image differ.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
cp -r pyproject.toml README.md lakehouse ingest edge_agent "$work/"
"$work/venv/bin/python" -m pip install --quiet --no-cache-dir "$work/edge_agent" "$work"
{
    echo "# Written by \`make lock\` (scripts/lock-image.sh) for CPython 3.11 on Linux; do not edit."
    "$work/venv/bin/python" -m pip freeze --all --exclude lakehouse --exclude lakehouse-edge \
        --exclude pip --exclude setuptools --exclude wheel | LC_ALL=C sort -f
} > compose/constraints.txt
echo "wrote compose/constraints.txt ($(grep -vc '^#' compose/constraints.txt) packages)"

"$python" -m venv "$work/superset"
"$work/superset/bin/python" -m pip install --quiet --upgrade pip
"$work/superset/bin/python" -m pip install --quiet --no-cache-dir \
    --requirement compose/superset-requirements.txt
{
    echo "# Written by \`make lock\` (scripts/lock-image.sh) for CPython 3.11 on Linux; do not edit."
    "$work/superset/bin/python" -m pip freeze --all --exclude pip --exclude setuptools \
        --exclude wheel | LC_ALL=C sort -f
} > compose/superset-constraints.txt
echo "wrote compose/superset-constraints.txt ($(grep -vc '^#' compose/superset-constraints.txt) packages)"
