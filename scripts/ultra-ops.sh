#!/usr/bin/env bash
# Runs ultra-ops from the project's virtualenv (installing it on first use), from any folder.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/bootstrap.sh"
ensure_venv
export DAGSTER_HOME="${DAGSTER_HOME:-$ULTRA_ROOT/.dagster_home}"
exec "$VENV/bin/ultra-ops" "$@"
