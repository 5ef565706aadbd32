#!/usr/bin/env bash
# The release document's rollback command: rollback-mvp.sh --environment ENV [--backup ID] [--yes].
# Without --backup it lists the backups and restores the newest after confirmation.
exec "$(dirname "$0")/ultra-ops.sh" rollback "$@"
