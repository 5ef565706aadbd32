"""`ultra-ops`: the release document's commands, each a run of the same Dagster job the UI launches.

Exit codes: 0 success, 1 the operation failed (a failed verification, a refused lock),
2 bad input or config (nothing was written and no run was started).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ultra_ops.engine.errors import InputError, UltraOpsError
from ultra_ops.engine.inputs import validate_tag
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


def _settings(args: argparse.Namespace) -> Settings:
    if args.config:
        # The jobs read the same variable, so the run uses the file the operator named.
        os.environ[CONFIG_ENV_VAR] = str(Path(args.config).resolve())
    return load_settings(args.config)


def _run_job(settings: Settings, job: str, run_config: dict[str, Any], tags: dict[str, str]):  # noqa: ANN202
    from ultra_ops.defs.shared.launch import ensure_dagster_home, launch

    home = ensure_dagster_home(settings.path.parent / ".dagster_home")
    _progress(f"starting {job} (Dagster home {home})")
    result = launch(job, run_config, tags)
    state = "succeeded" if result.success else "FAILED"
    _progress(f"run {result.run_id} {state}")
    if not result.success:
        print(f"error: {result.message}", file=sys.stderr, flush=True)
    return result


def _ops_config(op: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"ops": {op: {"config": config}}}


def cmd_deploy(args: argparse.Namespace) -> int:
    settings = _settings(args)
    env = settings.environment(args.environment)
    tag = args.tag
    if tag is None:
        if env.name != "development":
            raise InputError(f"--tag is required for {env.name} deploys (e.g. --tag v1.2.3)")
        # The release document deploys development without a tag; give the build a dated dev version.
        tag = "v0.0.0-dev." + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    validate_tag(tag)
    from ultra_ops.engine.release.deploy import plan_deploy

    req = plan_deploy(settings, env.name, tag, skip_tests=args.skip_tests, skip_build=args.skip_build,
                      compose_file=args.compose, registry=args.registry)
    if req.skip_tests and env.name == "production":
        _progress("warning: --skip-tests on production is not recommended")
    config = {"environment": env.name, "tag": req.tag, "skip_tests": req.skip_tests,
              "skip_build": req.skip_build, "compose_file": req.compose_file, "registry": req.registry}
    result = _run_job(settings, "deploy_job", _ops_config("deploy_plan", config), req.run_tags())
    if result.success:
        _out(f"deployed {req.tag} to {env.name}")
    return 0 if result.success else 1


def cmd_verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    env = settings.environment(args.environment)
    result = _run_job(settings, "verify_job", _ops_config("verify_checks", {"environment": env.name}),
                      {"ultra_ops/environment": env.name, "ultra_ops/operation": "verify"})
    reports = [o for o in result.observations if "report" in o]
    if reports:
        report = reports[-1]
        if args.json:
            _out(json.dumps(report["report"], indent=2))
        else:
            _out(str(report["results"]).strip().strip("`").strip())
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
    settings = _settings(args)
    env = settings.environment(args.environment)
    backup_id = args.backup
    if backup_id is not None:
        from ultra_ops.engine.backups.store import get_backup

        get_backup(env, backup_id)  # an unknown id is bad input: refuse before any run starts
    else:
        rows = _backup_rows(env)
        _print_backups(rows)
        if not rows:
            raise InputError(f"environment {env.name} has no backups to roll back to")
        backup_id = rows[0]["id"]
        if not args.yes:
            if not sys.stdin.isatty():
                raise InputError(f"rolling back {env.name} to {backup_id} needs confirmation: pass --yes")
            answer = input(f"Roll back {env.name} to the newest backup {backup_id}? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                _out("rollback cancelled")
                return 1
    config = {"environment": env.name, "backup_id": backup_id}
    result = _run_job(settings, "rollback_job", _ops_config("rollback_plan", config),
                      {"ultra_ops/environment": env.name, "ultra_ops/operation": "rollback",
                       "ultra_ops/backup_id": backup_id})
    if result.success:
        _out(f"rolled back {env.name} to backup {backup_id}")
    return 0 if result.success else 1


def cmd_backups(args: argparse.Namespace) -> int:
    settings = _settings(args)
    env = settings.environment(args.environment)
    if args.backups_command == "list":
        rows = _backup_rows(env)
        if args.json:
            _out(json.dumps(rows, indent=2))
        else:
            _print_backups(rows)
        return 0
    result = _run_job(settings, "backup_job", _ops_config("backup_create", {"environment": env.name}),
                      {"ultra_ops/environment": env.name, "ultra_ops/operation": "backup"})
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
    from ultra_ops.engine.release.records import release_history
    from ultra_ops.engine.release.rollback import deployed_version
    from ultra_ops.engine.runtimes import get_runtime

    settings = _settings(args)
    env = settings.environment(args.environment)
    statuses = get_runtime(env).status()
    holder = lock_holder(env)
    history = release_history(env)
    _out(f"environment  {env.name} ({env.runtime} runtime)")
    _out(f"version      {deployed_version(env) or '-'}")
    _out(f"lock         {describe_holder(holder) if holder is not None else 'free'}")
    if history:
        last = history[-1]
        _out(f"last release {last.status} {last.version or '-'} at {last.at} (run {last.run_id or '-'})")
    for st in statuses:
        _out(f"service      {st.name:<16} {'running' if st.running else 'stopped':<8} {st.detail}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop the environment's services (docker-compose down), under the environment's lock."""
    from ultra_ops.engine.locks import EnvironmentLock
    from ultra_ops.engine.runtimes import get_runtime
    from ultra_ops.engine.secrets import Redactor

    settings = _settings(args)
    env = settings.environment(args.environment)
    with EnvironmentLock(env, operation="stop"):
        get_runtime(env, redact=Redactor.for_environment(env)).down()
    _out(f"stopped {env.name}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A full release cycle on the local development environment, every step a Dagster run."""
    settings = _settings(args)
    env = settings.environment(args.environment)
    base = ["--environment", env.name] + (["--config", str(settings.path)] if args.config else [])
    steps = [
        ("prepare the environment", ["init", *base]),
        ("deploy v1.0.0", ["deploy", *base, "--tag", "v1.0.0"]),
        ("verify", ["verify", *base]),
        ("deploy v1.1.0", ["deploy", *base, "--tag", "v1.1.0"]),
        ("list backups", ["backups", "list", *base]),
        ("roll back to the newest backup (v1.0.0)", ["rollback", *base, "--yes"]),
        ("verify", ["verify", *base]),
    ]
    for title, argv in steps:
        _progress(f"== {title}: ultra-ops {' '.join(argv)}")
        code = main(argv)
        if code != 0:
            _progress(f"release cycle stopped at '{title}' (exit {code})")
            return code
    _out(f"release cycle done on {env.name}; run `dagster dev` with DAGSTER_HOME={os.environ['DAGSTER_HOME']} "
         "to see every run")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ultra-ops", description="Ultra AI release operations, run as Dagster jobs.")
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="PATH",
                        help=f"config file (default: ${CONFIG_ENV_VAR} or ./ultra_ops.toml)")
    common.add_argument("--environment", "-e", required=True, metavar="ENV",
                        help="one of " + ", ".join(ENVIRONMENT_NAMES))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("deploy", parents=[common], help="deploy a release (backup, migrate, up, verify, tag)")
    p.add_argument("--tag", help="release tag, v + semantic version (required outside development)")
    p.add_argument("--skip-tests", action="store_true", help="skip the test command (not for production)")
    p.add_argument("--skip-build", action="store_true", help="skip building images")
    p.add_argument("--compose", metavar="FILE", help="a custom Docker Compose file")
    p.add_argument("--registry", metavar="URL", help="push images to this registry")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("verify", parents=[common], help="verify an environment")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("rollback", parents=[common], help="restore a backup, restart and verify")
    p.add_argument("--backup", metavar="ID", help="backup to restore (default: the newest, after confirmation)")
    p.add_argument("--yes", "-y", action="store_true", help="confirm without asking")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("backups", help="list or create backups")
    bsub = p.add_subparsers(dest="backups_command", required=True, parser_class=_Parser)
    b = bsub.add_parser("list", parents=[common], help="list an environment's backups, newest first")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_backups)
    b = bsub.add_parser("create", parents=[common], help="take a backup now")
    b.set_defaults(func=cmd_backups)

    p = sub.add_parser("init", parents=[common], help="create the env file and database of an environment")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("status", parents=[common], help="services, deployed version, lock and last release")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("stop", parents=[common], help="stop the environment's services")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("demo", parents=[common], help="a full release cycle, each step a Dagster run")
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


if __name__ == "__main__":
    sys.exit(main())
