#!/usr/bin/env bash
# Creates .venv with the project installed (editable) and the given extras, pinned by constraints.txt.
# Usage: scripts/setup-venv.sh [extras]   e.g. scripts/setup-venv.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "error: hyperv-exporter needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2
    exit 1
fi
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian ships venv/ensurepip separately.
    echo "installing python3-venv (Debian) ..." >&2
    scripts/apt-install.sh python3-venv
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
.venv/bin/python -m pip install --quiet -c constraints.txt -e "$spec"
