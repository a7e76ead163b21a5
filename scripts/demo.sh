#!/usr/bin/env bash
# Sets up .venv and runs the exporter against the built-in simulated Hyper-V fleet.
# Extra arguments go to hyperv-exporter (e.g. --web.listen-address :10020).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
exec .venv/bin/hyperv-exporter --demo "$@"
