#!/usr/bin/env bash
# The release document's verify command: verify-deployment.sh --environment ENV [--json].
exec "$(dirname "$0")/ultra-ops.sh" verify "$@"
