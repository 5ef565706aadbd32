"""The `ultra-ops` command line: every command, its flags, and the checks of their values."""

from __future__ import annotations

import argparse
from datetime import date

from ultra_ops.cli.backups import cmd_backups, cmd_recover
from ultra_ops.cli.calendar import cmd_approve, cmd_calendar
from ultra_ops.cli.common import (
    Parser,
)
from ultra_ops.cli.maintenance import cmd_maintenance
from ultra_ops.cli.release import (
    cmd_checklist,
    cmd_demo,
    cmd_deploy,
    cmd_init,
    cmd_release_branch,
    cmd_releases,
    cmd_rollback,
    cmd_status,
    cmd_stop,
    cmd_verify,
)
from ultra_ops.engine.settings import CONFIG_ENV_VAR, ENVIRONMENT_NAMES


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 86400, got {text!r}")
    return value


def _day(text: str) -> str:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day YYYY-MM-DD, got {text!r}") from None
    if day < date(2026, 1, 1):
        raise argparse.ArgumentTypeError(f"{day} is before the first day logs are kept for (2026-01-01)")
    return day.isoformat()


def _weeks(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 104:
        raise argparse.ArgumentTypeError(f"expected 1 to 104 weeks, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ultra-ops", description="Ultra AI release operations, run as Dagster jobs.")
    common = Parser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", help=f"config file (default: ${CONFIG_ENV_VAR} or ./ultra_ops.toml)"
    )
    common.add_argument(
        "--environment", "-e", required=True, metavar="ENV", help="one of " + ", ".join(ENVIRONMENT_NAMES)
    )
    locking = Parser(add_help=False)
    locking.add_argument(
        "--lock-wait",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for another operation's lock (default: refuse at once)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("deploy", parents=[common, locking], help="deploy a release (backup, migrate, up, verify, tag)")
    p.add_argument("--tag", help="release tag, v + semantic version (required outside development)")
    p.add_argument("--skip-tests", action="store_true", help="skip the test command (not for production)")
    p.add_argument("--skip-build", action="store_true", help="skip building images")
    p.add_argument("--compose", metavar="FILE", help="a custom Docker Compose file")
    p.add_argument("--registry", metavar="URL", help="push images to this registry")
    p.add_argument(
        "--emergency",
        action="store_true",
        help="an emergency fix: past freezes and the promotion gate, never past tests or verification",
    )
    p.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="deploy a version older than the one running (refused otherwise; a rollback restores a backup instead)",
    )
    p.add_argument(
        "--reason",
        metavar="TEXT",
        help="why the emergency fix cannot wait, or why the older version must run (required with "
        "--emergency or --allow-downgrade; recorded)",
    )
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("verify", parents=[common], help="verify an environment, or decide on a waiting one")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--window",
        action="store_true",
        help="verify over the environment's verification window ([verify.window]) instead of once",
    )
    p.add_argument(
        "--decide",
        choices=("approve", "rollback"),
        help="decide on a deploy whose verification window was inconclusive",
    )
    p.add_argument("--by", metavar="NAME", help="who decides (recorded; with --decide)")
    p.add_argument("--reason", metavar="TEXT", help="why (recorded; with --decide)")
    p.add_argument("--request", metavar="ID", help="the waiting verification (default: the only one)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("checklist", parents=[common], help="the pre-release checklist, each item with its evidence")
    p.add_argument("--tag", help="the version about to be deployed (default: the deployed one)")
    p.add_argument("--json", action="store_true", help="print the checklist as JSON")
    p.set_defaults(func=cmd_checklist)

    p = sub.add_parser("release-branch", help="make release/vX.Y.Z from main, with the version written in")
    p.add_argument("--config", metavar="PATH", help=f"config file (default: ${CONFIG_ENV_VAR} or ./ultra_ops.toml)")
    p.add_argument("--tag", required=True, help="the release's version, e.g. v1.2.3")
    p.set_defaults(func=cmd_release_branch)

    p = sub.add_parser("rollback", parents=[common, locking], help="restore a backup, restart and verify")
    p.add_argument("--backup", metavar="ID", help="backup to restore (default: the newest, after confirmation)")
    p.add_argument("--yes", "-y", action="store_true", help="confirm without asking")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("backups", help="list or create backups")
    bsub = p.add_subparsers(dest="backups_command", required=True, parser_class=Parser)
    b = bsub.add_parser("list", parents=[common], help="list an environment's backups, newest first")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_backups)
    b = bsub.add_parser("create", parents=[common, locking], help="take a backup now")
    b.set_defaults(func=cmd_backups)
    b = bsub.add_parser("verify", parents=[common], help="check backups against their manifests (sha256)")
    b.add_argument("--backup", metavar="ID", help="one backup (default: all)")
    b.add_argument(
        "--restore-test",
        action="store_true",
        help="then run the backups asset's checks on it (default: the newest backup): pg_restore "
        "--list, a restore test into a scratch database, freshness",
    )
    b.set_defaults(func=cmd_backups)
    b = bsub.add_parser("prune", parents=[common, locking], help="apply the retention policy")
    b.add_argument("--dry-run", action="store_true", help="show what would be removed, remove nothing")
    b.set_defaults(func=cmd_backups)
    for verb, what in (("pin", "keep a backup forever"), ("unpin", "let retention remove a backup again")):
        b = bsub.add_parser(verb, parents=[common, locking], help=what)
        b.add_argument("--backup", metavar="ID", required=True, help="the backup")
        b.set_defaults(func=cmd_backups)

    p = sub.add_parser(
        "recover",
        parents=[common, locking],
        help="finish or undo what a crashed run left (database swap, scratch databases, temp folders)",
    )
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("init", parents=[common], help="create the env file and database of an environment")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("status", parents=[common], help="services, deployed version, lock and last release")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("maintenance", help="VACUUM ANALYZE, cache statistics, cache clear")
    msub = p.add_subparsers(dest="maintenance_command", required=True, parser_class=Parser)
    m = msub.add_parser("vacuum", parents=[common, locking], help="VACUUM ANALYZE the environment's database")
    m.set_defaults(func=cmd_maintenance)
    m = msub.add_parser("status", parents=[common], help="each service's state, CPU time and memory")
    m.set_defaults(func=cmd_maintenance)
    m = msub.add_parser("archive-logs", parents=[common], help="rotate and archive a day's logs, verified")
    m.add_argument("--day", type=_day, metavar="YYYY-MM-DD", help="the day to archive (default: yesterday)")
    m.set_defaults(func=cmd_maintenance)
    m = msub.add_parser("cache-stats", parents=[common], help="the environment's Redis INFO, with its checks")
    m.set_defaults(func=cmd_maintenance)
    m = msub.add_parser("cache-clear", parents=[common, locking], help="remove cache keys: --pattern or --flush-all")
    m.add_argument("--pattern", metavar="GLOB", help="remove the keys matching this Redis glob (SCAN + UNLINK)")
    m.add_argument(
        "--flush-all", action="store_true", help="remove every key of the environment's Redis database (FLUSHDB)"
    )
    m.set_defaults(func=cmd_maintenance)

    p = sub.add_parser("approve", parents=[common], help="approve a version for scheduled deploys")
    p.add_argument("--tag", required=True, help="the version approved, e.g. v1.2.3")
    p.add_argument("--by", required=True, metavar="NAME", help="who approves it")
    p.add_argument(
        "--at",
        metavar="TIME",
        help="when the approval starts to count, ISO time with zone (default now; "
        "at most calendar.approval.expires_hours ahead)",
    )
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("calendar", help="the coming release and backup ticks and what each would do")
    p.add_argument("--config", metavar="PATH", help=f"config file (default: ${CONFIG_ENV_VAR} or ./ultra_ops.toml)")
    p.add_argument("--environment", "-e", metavar="ENV", help="only this environment's ticks")
    p.add_argument("--weeks", type=_weeks, default=4, metavar="N", help="how far ahead (default 4)")
    p.add_argument("--backups", action="store_true", help="list the nightly backups and weekly vacuums too")
    p.add_argument(
        "--record",
        action="store_true",
        help="also show it in the UI: run release_calendar_job (the release_calendar and pending_decisions assets)",
    )
    p.set_defaults(func=cmd_calendar)

    p = sub.add_parser("releases", parents=[common], help="the environment's deploys and rollbacks, newest first")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.set_defaults(func=cmd_releases)

    p = sub.add_parser("stop", parents=[common, locking], help="stop the environment's services")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("demo", help="one release through development, staging and production, each step a Dagster run")
    p.add_argument("--config", metavar="PATH", help=f"config file (default: ${CONFIG_ENV_VAR} or ./ultra_ops.toml)")
    p.add_argument("--environment", "-e", metavar="ENV", help="a release cycle on this environment only")
    p.add_argument(
        "--compose",
        action="store_true",
        help="staging and production as compose projects here (default: deploy/ultra_ops.compose-local.toml)",
    )
    p.set_defaults(func=cmd_demo)
    return parser
