"""Commands of the backups domain: list, create, verify, prune, pin, unpin, recover."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ultra_ops.cli.common import (
    ops_config,
    out,
    run_job,
    settings_of,
)
from ultra_ops.engine.clock import local_time
from ultra_ops.engine.settings import Environment


def backup_rows(env: Environment) -> list[dict[str, Any]]:
    from ultra_ops.engine.backups.store import list_backups

    return [b.to_dict() for b in list_backups(env)]


def print_backups(rows: list[dict[str, Any]], timezone: str = "UTC") -> None:
    """The backups as a table, their times in the config's `timezone` (the JSON keeps UTC)."""
    if not rows:
        out("no backups")
        return
    out(f"{'BACKUP ID':<28} {'VERSION':<22} {'CREATED':<26} {'SIZE':>10}  {'KIND':<9}  LABEL")
    for b in rows:
        size = f"{b['size_bytes'] / 1e6:.1f} MB"
        out(
            f"{b['id']:<28} {b.get('version') or '-':<22} {local_time(b['created_at'], timezone):<26} {size:>10}  "
            f"{b.get('kind', ''):<9}  {b.get('label', '')}"
        )


def cmd_backups(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    env = settings.environment(args.environment)
    if args.backups_command == "list":
        from ultra_ops.engine.backups.store import damaged_backups

        rows = [{**row, "status": "complete"} for row in backup_rows(env)]
        damaged = [
            {"id": backup_id, "status": "damaged", "reason": reason} for backup_id, reason in damaged_backups(env)
        ]
        if args.json:
            out(json.dumps(rows + damaged, indent=2))
        else:
            print_backups(rows, env.timezone)
            for row in damaged:
                out(f"{row['id']:<28} DAMAGED: {row['reason']}")
        return 0
    if args.backups_command in ("pin", "unpin"):
        from ultra_ops.engine.backups.store import get_backup

        get_backup(env, args.backup)  # an unknown id is bad input: refused before any run starts
        config = {"backup_id": args.backup, "pinned": args.backups_command == "pin"}
        result = run_job(args, settings, "pin_job", env.name, ops_config("backups_pin", config))
    elif args.backups_command == "prune":
        result = run_job(args, settings, "prune_job", env.name, ops_config("backups_prune", {"dry_run": args.dry_run}))
        for decision in result.outputs.get("backups_prune", {}).get("decisions") or []:
            verb = "keep  " if decision["keep"] else ("would remove" if args.dry_run else "removed")
            out(f"{verb} {decision['backup_id']}: {decision['why']}")
    elif args.backups_command == "verify":
        if args.backup:
            from ultra_ops.engine.backups.store import get_backup

            get_backup(env, args.backup)  # an unknown id is bad input: refused before any run starts
        result = run_job(
            args, settings, "verify_backups_job", env.name, ops_config("backups_verify", {"backup_id": args.backup})
        )
        for backup_id, outcome in (result.outputs.get("backups_verify", {}).get("results") or {}).items():
            out(f"{backup_id}: {outcome}")
        if args.restore_test:
            checked = run_job(args, settings, "backup_checks_job", env.name, partitioned=False, backup_id=args.backup)
            for check in checked.checks:
                state = "ok" if check["passed"] else ("WARNING" if check["severity"] == "WARN" else "FAILED")
                out(f"{check['name']}: {state}: {check['description']}")
            failed = [c for c in checked.checks if not c["passed"] and c["severity"] == "ERROR"]
            return 0 if result.success and checked.success and not failed else 1
    else:
        result = run_job(args, settings, "backup_job", env.name)
    return 0 if result.success else 1


def cmd_recover(args: argparse.Namespace) -> int:
    """`recover_job`: what a dead run left, finished or undone, under the environment's lock."""
    settings = settings_of(args)
    env = settings.environment(args.environment)
    result = run_job(args, settings, "recover_job", env.name)
    output = result.outputs.get("recover_environment", {})
    done = output.get("recovered") or []
    for line in done:
        out(line)
    if result.success:
        out(f"{env.name}: {'recovered' if done else 'nothing to recover'}; {output.get('services', '')}")
    return 0 if result.success else 1
