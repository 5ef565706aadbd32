#!/usr/bin/env bash
# Runs ultra-ops from the project's virtualenv (installing it on first use), from any folder.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/bootstrap.sh"
ensure_venv
exec "$VENV/bin/ultra-ops" "$@"
