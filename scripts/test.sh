#!/usr/bin/env bash
# Sets up everything the test suite needs on a Debian machine and runs all of it:
# Debian packages (promtool, Alertmanager, chrony, node_exporter) when missing, .venv with the test
# extras, then ruff, mypy and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
[ -x /usr/sbin/chronyd ] || command -v chronyd >/dev/null 2>&1 || missing+=(chrony)
command -v prometheus-node-exporter >/dev/null 2>&1 || missing+=(prometheus-node-exporter)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    scripts/apt-install.sh "${missing[@]}"
fi

scripts/setup-venv.sh test

echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
exec .venv/bin/pytest "$@"
