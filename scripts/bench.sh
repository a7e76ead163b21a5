#!/usr/bin/env bash
# Runs the benchmark suite and writes its tables into docs/performance.md (see that file).
# Installs Debian's prometheus-node-exporter (the Go baseline) when missing and sets up .venv with
# the bench extras (pyinstrument). Extra arguments go to the suite, e.g. --quick for a smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v prometheus-node-exporter >/dev/null 2>&1 && [ ! -x /usr/bin/prometheus-node-exporter ]; then
    echo "installing Debian package: prometheus-node-exporter" >&2
    scripts/apt-install.sh prometheus-node-exporter
fi
scripts/setup-venv.sh bench
exec .venv/bin/python -m benchmarks.run "$@"
