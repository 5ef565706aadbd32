#!/usr/bin/env bash
# The release document's deploy command: deploy-mvp.sh --environment ENV [--tag vX.Y.Z] [--skip-tests]
# [--skip-build] [--compose FILE] [--registry URL] [--emergency|--allow-downgrade --reason TEXT]. A thin
# wrapper over the deploy_job run.
exec "$(dirname "$0")/ultra-ops.sh" deploy "$@"
