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
# The landing-page screenshot test (headless Chromium, with a font to render the page in) and the
# systemd unit checks (systemd-analyze verify/security).
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
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
