#!/usr/bin/env bash
# Installs Debian packages, with sudo when not root. Fails loudly when that is impossible.
set -euo pipefail
[ "$#" -gt 0 ] || exit 0
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "error: need root or sudo to install: $*" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@"
