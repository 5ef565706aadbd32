"""`ultra-ops maintenance`: the release document's maintenance tasks, each a Dagster run."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ultra_ops.cli.common import (
    ops_config,
    out,
    run_job,
    settings_of,
)
from ultra_ops.engine.errors import InputError


def cmd_maintenance(args: argparse.Namespace) -> int:
    """The release document's maintenance tasks, each a Dagster run like the rest."""
    settings = settings_of(args)
    env = settings.environment(args.environment)
    if args.maintenance_command == "vacuum":
        result = run_job(args, settings, "vacuum_job", env.name)
    elif args.maintenance_command == "status":
        result = run_job(args, settings, "status_job", env.name)
        for meta in result.asset_metadata:
            for svc in meta.get("status") or []:
                memory = f"{svc['memory_bytes'] / 1e6:.1f} MB" if svc.get("memory_bytes") is not None else "-"
                cpu = f"{svc['cpu_seconds']:.2f} s" if svc.get("cpu_seconds") is not None else "-"
                out(
                    f"{svc['name']:<16} {svc['state'] or ('up' if svc['running'] else 'down'):<10} "
                    f"cpu {cpu:<10} mem {memory:<10} {svc['detail']}"
                )
    elif args.maintenance_command == "archive-logs":
        day = args.day or (datetime.now(ZoneInfo(settings.timezone)).date() - timedelta(days=1)).isoformat()
        result = run_job(args, settings, "log_archive_job", env.name, partition=f"{day}|{env.name}")
    elif args.maintenance_command == "cache-stats":
        result = run_job(args, settings, "cache_stats_job", env.name)
        stats = [o for o in result.asset_metadata if "stats" in o]
        if stats:
            out(json.dumps(stats[-1]["stats"], indent=2))
    else:
        if bool(args.pattern) == bool(args.flush_all):
            raise InputError("cache-clear needs --pattern GLOB, or --flush-all to remove every key")
        config = {"pattern": args.pattern, "flush_all": args.flush_all}
        result = run_job(args, settings, "cache_clear_job", env.name, ops_config("cache_clear", config))
    if result.success:
        out(f"{args.maintenance_command} of {env.name} done")
    return 0 if result.success else 1
