"""`ultra-ops`: the release document's commands, each a run of the same Dagster job the UI launches.

Exit codes: 0 success, 1 the operation failed (a failed verification, a refused lock),
2 bad input or config (nothing was written and no run was started).
"""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import logging
import os
import signal
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from ultra_ops.engine.errors import InputError, UltraOpsError
from ultra_ops.engine.settings import CONFIG_ENV_VAR, ENVIRONMENT_NAMES, Environment, Settings, load_settings


class UsageError(InputError):
    pass


class _Parser(argparse.ArgumentParser):
    # argparse exits 2 on bad usage already; route it through our one-line error format.
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _out(text: str) -> None:
    print(text, flush=True)


def _progress(text: str) -> None:
    print(f"ultra-ops: {text}", file=sys.stderr, flush=True)


_gc_paused_for_startup = False  # set by run(): the console script starts with the collector off


def _end_startup() -> None:
    """Turn the collector paused by run() back on, leaving what start-up built out of its sight.

    Start-up (imports, the Dagster instance) builds about 350,000 objects and the collector would
    walk them 500 times, about 0.19 s of a verify. gc.freeze() keeps them, garbage included (some
    MB), out of later collections, which then cover only what the run itself allocates.
    """
    global _gc_paused_for_startup
    if _gc_paused_for_startup:
        _gc_paused_for_startup = False
        gc.freeze()
        gc.enable()


def _settings(args: argparse.Namespace) -> Settings:
    if args.config:
        # The jobs read the same variable, so the run uses the file the operator named.
        os.environ[CONFIG_ENV_VAR] = str(Path(args.config).resolve())
    return load_settings(args.config)


def _launched_by() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"uid:{os.getuid()}"


def _run_job(args: argparse.Namespace, settings: Settings, job: str, environment: str,
             run_config: dict[str, Any] | None = None, *, partition: str | None = None,
             **tag_values: Any):  # noqa: ANN202
    """Run `job` for one environment partition, tagged before it starts, as the UI would file it."""
    from dagster import DagsterInstance

    from ultra_ops.defs.shared.launch import ensure_dagster_home, launch
    from ultra_ops.defs.shared.tags import PARTITION, launch_tags
    from ultra_ops.engine.envfile import read_env_file

    # An env file the run could not read is bad input: refused here, before a run exists.
    read_env_file(settings.environment(environment).env_file)
    home = ensure_dagster_home(settings.path.parent / ".dagster_home")
    operation = job.removesuffix("_job")
    tags = launch_tags(environment, operation, launched_by=_launched_by(), **tag_values)
    if partition:
        tags[PARTITION] = partition  # a job partitioned by more than the environment
    config = {**(run_config or {}),
              "resources": {"locks": {"config": {"lock_wait_s": float(getattr(args, "lock_wait", 0) or 0)}}}}
    _progress(f"starting {job} for {environment} (Dagster home {home})")
    instance = DagsterInstance.get()
    _end_startup()
    result = launch(job, config, tags, instance=instance)
    state = "succeeded" if result.success else "FAILED"
    _progress(f"run {result.run_id} {state}")
    if not result.success:
        print(f"error: {result.message}", file=sys.stderr, flush=True)
    return result


def _ops_config(op: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"ops": {op: {"config": config}}}


def cmd_deploy(args: argparse.Namespace) -> int:
    from ultra_ops.defs.shared.tags import EMERGENCY, SKIP_BUILD, SKIP_TESTS
    from ultra_ops.engine.calendar.gates import check_emergency
    from ultra_ops.engine.release.deploy import plan_deploy, resolve_tag

    settings = _settings(args)
    env = settings.environment(args.environment)
    # Every input is checked here too, so bad input exits 2 before a run exists.
    emergency = check_emergency(args.emergency, args.reason)
    req = plan_deploy(settings, env.name, resolve_tag(env, args.tag), skip_tests=args.skip_tests,
                      skip_build=args.skip_build, compose_file=args.compose, registry=args.registry,
                      emergency_reason=emergency)
    if req.skip_tests and env.name == "production":
        _progress("warning: --skip-tests on production is not recommended")
    config = {"tag": req.tag, "skip_tests": req.skip_tests, "skip_build": req.skip_build,
              "compose_file": req.compose_file, "registry": req.registry, "emergency": bool(emergency),
              "reason": emergency}
    result = _run_job(args, settings, "deploy_job", env.name, _ops_config("deploy_plan", config),
                      version=req.tag,
                      flags={SKIP_TESTS: req.skip_tests, SKIP_BUILD: req.skip_build, EMERGENCY: bool(emergency)})
    if result.success:
        _out(f"deployed {req.tag} to {env.name}")
    return 0 if result.success else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from ultra_ops.engine.release.rollback import deployed_version
    from ultra_ops.engine.verify.report import VerifyReport

    settings = _settings(args)
    env = settings.environment(args.environment)
    result = _run_job(args, settings, "verify_job", env.name, version=deployed_version(env))
    reports = [o["report"] for o in result.asset_metadata if "report" in o]
    if reports:
        # The report as the run recorded it (already redacted), not re-derived here.
        _out(json.dumps(reports[-1], indent=2) if args.json else VerifyReport.from_dict(reports[-1]).table())
    return 0 if result.success else 1


def _backup_rows(env: Environment) -> list[dict[str, Any]]:
    from ultra_ops.engine.backups.store import list_backups

    return [b.to_dict() for b in list_backups(env)]


def _print_backups(rows: list[dict[str, Any]]) -> None:
    if not rows:
        _out("no backups")
        return
    _out(f"{'BACKUP ID':<28} {'VERSION':<22} {'CREATED':<26} {'SIZE':>10}  LABEL")
    for b in rows:
        size = f"{b['size_bytes'] / 1e6:.1f} MB"
        _out(f"{b['id']:<28} {b.get('version') or '-':<22} {b['created_at']:<26} {size:>10}  {b.get('label', '')}")


def cmd_rollback(args: argparse.Namespace) -> int:
    from ultra_ops.engine.release.rollback import choose_backup

    settings = _settings(args)
    env = settings.environment(args.environment)
    if args.backup is None:
        _print_backups(_backup_rows(env))
    info = choose_backup(env, args.backup)  # an unknown id is bad input: refused before any run starts
    if args.backup is None and not args.yes:
        if not sys.stdin.isatty():
            raise InputError(f"rolling back {env.name} to {info.id} needs confirmation: pass --yes")
        answer = input(f"Roll back {env.name} to the newest backup {info.id}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            _out("rollback cancelled")
            return 1
    result = _run_job(args, settings, "rollback_job", env.name, _ops_config("rollback_plan", {"backup_id": info.id}),
                      version=info.version, backup_id=info.id)
    if result.success:
        _out(f"rolled back {env.name} to backup {info.id}")
    return 0 if result.success else 1


def cmd_backups(args: argparse.Namespace) -> int:
    settings = _settings(args)
    env = settings.environment(args.environment)
    if args.backups_command == "list":
        from ultra_ops.engine.backups.store import damaged_backups

        rows = [{**row, "status": "complete"} for row in _backup_rows(env)]
        damaged = [{"id": backup_id, "status": "damaged", "reason": reason}
                   for backup_id, reason in damaged_backups(env)]
        if args.json:
            _out(json.dumps(rows + damaged, indent=2))
        else:
            _print_backups(rows)
            for row in damaged:
                _out(f"{row['id']:<28} DAMAGED: {row['reason']}")
        return 0
    if args.backups_command in ("pin", "unpin"):
        from ultra_ops.engine.backups.store import get_backup

        get_backup(env, args.backup)  # an unknown id is bad input: refused before any run starts
        config = {"backup_id": args.backup, "pinned": args.backups_command == "pin"}
        result = _run_job(args, settings, "pin_job", env.name, _ops_config("backups_pin", config))
    elif args.backups_command == "prune":
        result = _run_job(args, settings, "prune_job", env.name,
                          _ops_config("backups_prune", {"dry_run": args.dry_run}))
        for decision in result.outputs.get("backups_prune", {}).get("decisions") or []:
            verb = "keep  " if decision["keep"] else ("would remove" if args.dry_run else "removed")
            _out(f"{verb} {decision['backup_id']}: {decision['why']}")
    elif args.backups_command == "verify":
        result = _run_job(args, settings, "verify_backups_job", env.name,
                          _ops_config("backups_verify", {"backup_id": args.backup}))
        for backup_id, outcome in (result.outputs.get("backups_verify", {}).get("results") or {}).items():
            _out(f"{backup_id}: {outcome}")
    else:
        result = _run_job(args, settings, "backup_job", env.name)
    return 0 if result.success else 1


def cmd_recover(args: argparse.Namespace) -> int:
    """`recover_job`: what a dead run left, finished or undone, under the environment's lock."""
    settings = _settings(args)
    env = settings.environment(args.environment)
    result = _run_job(args, settings, "recover_job", env.name)
    done = result.outputs.get("recover_environment", {}).get("recovered") or []
    for line in done:
        _out(line)
    if result.success:
        _out(f"{env.name}: {'recovered' if done else 'nothing to recover'}")
    return 0 if result.success else 1


def cmd_init(args: argparse.Namespace) -> int:
    from ultra_ops.engine.bootstrap import init_environment

    settings = _settings(args)
    env = settings.environment(args.environment)
    for line in init_environment(env):
        _out(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """What runs where: services, deployed version, lock holder, last release record."""
    from ultra_ops.engine.locks import describe_holder, lock_holder
    from ultra_ops.engine.release.records import last_release
    from ultra_ops.engine.release.rollback import deployed_version
    from ultra_ops.engine.runtimes import get_runtime

    settings = _settings(args)
    env = settings.environment(args.environment)
    statuses = get_runtime(env).status()
    holder = lock_holder(env)
    last = last_release(env)
    _out(f"environment  {env.name} ({env.runtime} runtime)")
    _out(f"version      {deployed_version(env) or '-'}")
    _out(f"lock         {describe_holder(holder) if holder is not None else 'free'}")
    if last is not None:
        _out(f"last release {last.operation} {last.version or '-'} {last.status} at {last.ended_at} "
             f"(run {last.run_id or '-'}, by {last.launched_by or '-'})")
    for st in statuses:
        _out(f"service      {st.name:<16} {'running' if st.running else 'stopped':<8} {st.detail}")
    return 0


def cmd_releases(args: argparse.Namespace) -> int:
    """The environment's release records, newest first: a table or JSON."""
    from ultra_ops.engine.release.records import find_releases

    settings = _settings(args)
    env = settings.environment(args.environment)
    records = find_releases(env)
    if args.json:
        _out(json.dumps([r.to_dict() for r in records], indent=2))
        return 0
    if not records:
        _out("no releases")
        return 0
    _out(f"{'STARTED':<29} {'OPERATION':<9} {'VERSION':<22} {'PREVIOUS':<22} {'STATUS':<15} {'RUN':<8} "
         f"{'LAUNCHED BY':<16} REASON")
    for r in records:
        reason = " ".join((r.reason or "").split())  # one line per record
        _out(f"{r.started_at:<29} {r.operation:<9} {r.version or '-':<22} {r.previous_version or '-':<22} "
             f"{r.status:<15} {(r.run_id or '-')[:8]:<8} {r.launched_by or '-':<16} {reason}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """`approve_job`: a person's yes to a version, which scheduled production deploys wait for."""
    from ultra_ops.engine.calendar.approvals import check_approval

    settings = _settings(args)
    env = check_approval(settings, args.environment, args.tag, args.by)
    result = _run_job(args, settings, "approve_job", env.name,
                      _ops_config("approve_release", {"tag": args.tag, "by": args.by}), version=args.tag)
    if result.success:
        _out(f"{args.tag} approved for {env.name} by {args.by}")
    return 0 if result.success else 1


def cmd_maintenance(args: argparse.Namespace) -> int:
    """The release document's maintenance tasks, each a Dagster run like the rest."""
    settings = _settings(args)
    env = settings.environment(args.environment)
    if args.maintenance_command == "vacuum":
        result = _run_job(args, settings, "vacuum_job", env.name)
    elif args.maintenance_command == "status":
        result = _run_job(args, settings, "status_job", env.name)
        for meta in result.asset_metadata:
            for svc in meta.get("status") or []:
                memory = f"{svc['memory_bytes'] / 1e6:.1f} MB" if svc.get("memory_bytes") is not None else "-"
                cpu = f"{svc['cpu_seconds']:.2f} s" if svc.get("cpu_seconds") is not None else "-"
                _out(f"{svc['name']:<16} {svc['state'] or ('up' if svc['running'] else 'down'):<10} "
                     f"cpu {cpu:<10} mem {memory:<10} {svc['detail']}")
    elif args.maintenance_command == "archive-logs":
        day = args.day or (datetime.now(ZoneInfo(settings.timezone)).date() - timedelta(days=1)).isoformat()
        result = _run_job(args, settings, "log_archive_job", env.name, partition=f"{day}|{env.name}")
    elif args.maintenance_command == "cache-stats":
        result = _run_job(args, settings, "cache_stats_job", env.name)
        stats = [o for o in result.asset_metadata if "stats" in o]
        if stats:
            _out(json.dumps(stats[-1]["stats"], indent=2))
    else:
        if bool(args.pattern) == bool(args.flush_all):
            raise InputError("cache-clear needs --pattern GLOB, or --flush-all to remove every key")
        config = {"pattern": args.pattern, "flush_all": args.flush_all}
        result = _run_job(args, settings, "cache_clear_job", env.name, _ops_config("cache_clear", config))
    if result.success:
        _out(f"{args.maintenance_command} of {env.name} done")
    return 0 if result.success else 1


def cmd_calendar(args: argparse.Namespace) -> int:
    """The coming release and backup ticks, with what each would do or why it would skip."""
    from ultra_ops.engine.calendar.ticks import upcoming

    settings = _settings(args)
    environment = settings.environment(args.environment).name if args.environment else None
    ticks = upcoming(settings, datetime.now(UTC), args.weeks, environment)
    if not args.backups:
        ticks = [t for t in ticks if t.schedule not in ("nightly_backup_schedule", "weekly_vacuum_schedule")]
    for tick in ticks:
        _out(tick.describe())
    if not ticks:
        _out("no ticks in that time")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop the environment's services (docker-compose down): `stop_job`, under the environment's lock."""
    settings = _settings(args)
    env = settings.environment(args.environment)
    result = _run_job(args, settings, "stop_job", env.name)
    if result.success:
        _out(f"stopped {env.name}")
    return 0 if result.success else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """One release through development, staging and production (or a cycle on --environment)."""
    from ultra_ops.demo import run_demo

    settings = _settings(args)
    config = ["--config", str(settings.path)] if args.config else []
    return run_demo(settings, args.environment, config, run=main, progress=_progress, out=_out)


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
    parser = _Parser(prog="ultra-ops", description="Ultra AI release operations, run as Dagster jobs.")
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="PATH",
                        help=f"config file (default: ${CONFIG_ENV_VAR} or ./ultra_ops.toml)")
    common.add_argument("--environment", "-e", required=True, metavar="ENV",
                        help="one of " + ", ".join(ENVIRONMENT_NAMES))
    locking = _Parser(add_help=False)
    locking.add_argument("--lock-wait", type=_seconds, default=0.0, metavar="SECONDS",
                         help="wait up to SECONDS for another operation's lock (default: refuse at once)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("deploy", parents=[common, locking], help="deploy a release (backup, migrate, up, verify, tag)")
    p.add_argument("--tag", help="release tag, v + semantic version (required outside development)")
    p.add_argument("--skip-tests", action="store_true", help="skip the test command (not for production)")
    p.add_argument("--skip-build", action="store_true", help="skip building images")
    p.add_argument("--compose", metavar="FILE", help="a custom Docker Compose file")
    p.add_argument("--registry", metavar="URL", help="push images to this registry")
    p.add_argument("--emergency", action="store_true",
                   help="an emergency fix: past freezes and the promotion gate, never past tests or verification")
    p.add_argument("--reason", metavar="TEXT", help="why the emergency fix cannot wait (required with --emergency)")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("verify", parents=[common], help="verify an environment")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("rollback", parents=[common, locking], help="restore a backup, restart and verify")
    p.add_argument("--backup", metavar="ID", help="backup to restore (default: the newest, after confirmation)")
    p.add_argument("--yes", "-y", action="store_true", help="confirm without asking")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("backups", help="list or create backups")
    bsub = p.add_subparsers(dest="backups_command", required=True, parser_class=_Parser)
    b = bsub.add_parser("list", parents=[common], help="list an environment's backups, newest first")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_backups)
    b = bsub.add_parser("create", parents=[common, locking], help="take a backup now")
    b.set_defaults(func=cmd_backups)
    b = bsub.add_parser("verify", parents=[common], help="check backups against their manifests (sha256)")
    b.add_argument("--backup", metavar="ID", help="one backup (default: all)")
    b.set_defaults(func=cmd_backups)
    b = bsub.add_parser("prune", parents=[common, locking], help="apply the retention policy")
    b.add_argument("--dry-run", action="store_true", help="show what would be removed, remove nothing")
    b.set_defaults(func=cmd_backups)
    for verb, what in (("pin", "keep a backup forever"), ("unpin", "let retention remove a backup again")):
        b = bsub.add_parser(verb, parents=[common, locking], help=what)
        b.add_argument("--backup", metavar="ID", required=True, help="the backup")
        b.set_defaults(func=cmd_backups)

    p = sub.add_parser("recover", parents=[common, locking],
                       help="finish or undo what a crashed run left (database swap, scratch databases, temp folders)")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("init", parents=[common], help="create the env file and database of an environment")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("status", parents=[common], help="services, deployed version, lock and last release")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("maintenance", help="VACUUM ANALYZE, cache statistics, cache clear")
    msub = p.add_subparsers(dest="maintenance_command", required=True, parser_class=_Parser)
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
    m.add_argument("--flush-all", action="store_true",
                   help="remove every key of the environment's Redis database (FLUSHDB)")
    m.set_defaults(func=cmd_maintenance)

    p = sub.add_parser("approve", parents=[common], help="approve a version for scheduled deploys")
    p.add_argument("--tag", required=True, help="the version approved, e.g. v1.2.3")
    p.add_argument("--by", required=True, metavar="NAME", help="who approves it")
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("calendar", help="the coming release and backup ticks and what each would do")
    p.add_argument("--config", metavar="PATH", help=f"config file (default: ${CONFIG_ENV_VAR} or ./ultra_ops.toml)")
    p.add_argument("--environment", "-e", metavar="ENV", help="only this environment's ticks")
    p.add_argument("--weeks", type=_weeks, default=4, metavar="N", help="how far ahead (default 4)")
    p.add_argument("--backups", action="store_true", help="list the nightly backups and weekly vacuums too")
    p.set_defaults(func=cmd_calendar)

    p = sub.add_parser("releases", parents=[common], help="the environment's deploys and rollbacks, newest first")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.set_defaults(func=cmd_releases)

    p = sub.add_parser("stop", parents=[common, locking], help="stop the environment's services")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("demo", help="one release through development, staging and production, each step a Dagster run")
    p.add_argument("--config", metavar="PATH", help=f"config file (default: ${CONFIG_ENV_VAR} or ./ultra_ops.toml)")
    p.add_argument("--environment", "-e", metavar="ENV", help="a release cycle on this environment only")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UltraOpsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _interrupt(_signo: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run() -> NoReturn:
    """The `ultra-ops` console script: main(), then exit without tearing the interpreter down.

    Dagster's module graph takes about half a second to finalize at exit, a third of a short
    command's time. Everything the command wrote is committed by now (Dagster commits each event;
    the engine fsyncs its files), so only the standard streams need flushing. The garbage collector
    is off until the run starts (_end_startup).
    """
    global _gc_paused_for_startup
    # SIGTERM (a supervisor, `kill`) takes Ctrl-C's path: a deploy in progress rolls back first.
    signal.signal(signal.SIGTERM, _interrupt)
    gc.disable()
    _gc_paused_for_startup = True
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    run()
