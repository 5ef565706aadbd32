"""Commands of the release domain: deploy, verify, rollback, status, stop, releases, init, demo."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ultra_ops.cli.backups import backup_rows, print_backups
from ultra_ops.cli.common import (
    UsageError,
    ops_config,
    out,
    progress,
    run_job,
    settings_of,
)
from ultra_ops.engine.clock import local_time
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.settings import Environment, Settings

if TYPE_CHECKING:
    from ultra_ops.engine.hosts.ssh import Probe


def cmd_deploy(args: argparse.Namespace) -> int:
    from ultra_ops.defs.shared.tags import DOWNGRADE, EMERGENCY, SKIP_BUILD, SKIP_TESTS
    from ultra_ops.engine.calendar.gates import deploy_reasons
    from ultra_ops.engine.deployed import deployed_version
    from ultra_ops.engine.release.deploy import plan_deploy, resolve_tag
    from ultra_ops.engine.release.downgrade import check_downgrade, version_change

    settings = settings_of(args)
    env = settings.environment(args.environment)
    # Every input is checked here too, so bad input exits 2 before a run exists.
    emergency, downgrade = deploy_reasons(args.emergency, args.allow_downgrade, args.reason)
    req = plan_deploy(
        settings,
        env.name,
        resolve_tag(env, args.tag),
        skip_tests=args.skip_tests,
        skip_build=args.skip_build,
        compose_file=args.compose,
        registry=args.registry,
        emergency_reason=emergency,
    )
    # A downgrade too (the run checks again under the environment's lock).
    current = deployed_version(env)
    allowed = check_downgrade(env.name, current, req.tag, allowed=downgrade)
    if req.skip_tests and env.name == "production":
        progress("warning: --skip-tests on production is not recommended")
    progress(f"{env.name}: {version_change(current, req.tag)}" + (f" ({allowed})" if allowed else ""))
    from ultra_ops.defs.release.config import DeployConfig, deploy_run_config  # dagster: only once input is good

    form = DeployConfig(
        tag=req.tag,
        skip_tests=req.skip_tests,
        skip_build=req.skip_build,
        compose_file=req.compose_file,
        registry=req.registry,
        emergency=bool(emergency),
        allow_downgrade=bool(downgrade),
        reason=args.reason if emergency or downgrade else None,
    )
    result = run_job(
        args,
        settings,
        "deploy_job",
        env.name,
        deploy_run_config(form),
        version=req.tag,
        flags={
            SKIP_TESTS: req.skip_tests,
            SKIP_BUILD: req.skip_build,
            EMERGENCY: bool(emergency),
            DOWNGRADE: bool(allowed),
        },
    )
    if result.success:
        out(f"deployed {req.tag} to {env.name}")
    return 0 if result.success else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from ultra_ops.engine.deployed import deployed_version
    from ultra_ops.engine.verify.report import VerifyReport
    from ultra_ops.engine.verify.window import PASSED, WindowReport

    settings = settings_of(args)
    env = settings.environment(args.environment)
    if args.decide:
        return _decide(args, settings, env)
    if args.by or args.reason or args.request:
        raise UsageError("--by, --reason and --request go with --decide approve|rollback")
    config = ops_config("verify_checks", {"window": bool(args.window)})
    result = run_job(args, settings, "verify_job", env.name, config, version=deployed_version(env))
    windows = [o["window"] for o in result.asset_metadata if "window" in o]
    reports = [o["report"] for o in result.asset_metadata if "report" in o]
    # The reports as the run recorded them (already redacted), not re-derived here.
    if windows:
        window = WindowReport.from_dict(windows[-1])
        out(json.dumps(windows[-1], indent=2) if args.json else window.table())
        return 0 if result.success and window.outcome == PASSED else 1
    if reports:
        out(json.dumps(reports[-1], indent=2) if args.json else VerifyReport.from_dict(reports[-1]).table())
    return 0 if result.success else 1


def _decide(args: argparse.Namespace, settings: Settings, env: Environment) -> int:
    """Approve or roll back a release whose verification window is waiting for a person."""
    from ultra_ops.engine.envfile import read_env_file
    from ultra_ops.engine.verify.decisions import get, pending

    if not args.by:
        raise UsageError("--decide needs --by NAME: who decides is recorded")
    # Nothing to decide is bad input: refused here, before a run exists.
    if args.request:
        record = get(env, args.request)
        if record.decision is not None:
            at = local_time(record.decided_at, settings.timezone) if record.decided_at else "an unknown time"
            raise InputError(f"{record.id} was decided already: {record.decision} by {record.decided_by} at {at}")
    elif not pending(env):
        raise InputError(f"no verification of {env.name} is waiting for a decision")
    # The run has no environment tag, so run_job does not read the env file: a rollback decided
    # here would run with it.
    read_env_file(env.env_file)
    config = ops_config(
        "decide_verification",
        {
            "environment": env.name,
            "decision": args.decide,
            "by": args.by,
            "reason": args.reason,
            "request_id": args.request,
        },
    )
    # A job of no environment: no environment tag, so the queue never holds it behind the deploy.
    result = run_job(args, settings, "verification_decision_job", None, config)
    decision = result.outputs.get("decide_verification", {}).get("decision")
    if result.success and decision:
        out(f"{decision['id']} on {env.name}: {decision['decision']} decided by {decision['decided_by']}")
    return 0 if result.success else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    from ultra_ops.engine.release.rollback import choose_backup

    settings = settings_of(args)
    env = settings.environment(args.environment)
    if args.backup is None:
        print_backups(backup_rows(env), env.timezone)
    info = choose_backup(env, args.backup)  # an unknown id is bad input: refused before any run starts
    if args.backup is None and not args.yes:
        if not sys.stdin.isatty():
            raise InputError(f"rolling back {env.name} to {info.id} needs confirmation: pass --yes")
        answer = input(f"Roll back {env.name} to the newest backup {info.id}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            out("rollback cancelled")
            return 1
    result = run_job(
        args,
        settings,
        "rollback_job",
        env.name,
        ops_config("rollback_plan", {"backup_id": info.id}),
        version=info.version,
        backup_id=info.id,
    )
    if result.success:
        out(f"rolled back {env.name} to backup {info.id}")
    return 0 if result.success else 1


def cmd_init(args: argparse.Namespace) -> int:
    from ultra_ops.engine.bootstrap import init_environment
    from ultra_ops.engine.hosts.reach import Reach

    settings = settings_of(args)
    env = settings.environment(args.environment)
    # A hosted environment's database through tunnels to its host, closed when init is done.
    with Reach(env) as reached:
        lines = init_environment(env, reached=reached)
    for line in lines:
        out(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """What runs where: services, deployed version, lock holder, last release record, and what an
    interrupted run left for `ultra-ops recover` (a pending swap, services to put back)."""
    from ultra_ops.engine.backups.recover import pending_recovery
    from ultra_ops.engine.deployed import deployed_version
    from ultra_ops.engine.locks import describe_holder, lock_holder
    from ultra_ops.engine.release.records import last_release
    from ultra_ops.engine.runtimes import get_runtime

    settings = settings_of(args)
    env = settings.environment(args.environment)
    version = deployed_version(env)  # first: a bad env file is refused before the runtime is asked
    probe = host_probe(env)
    # A host that does not answer has no services to ask about: say so instead of failing on them.
    statuses = get_runtime(env).status() if probe is None or probe.answers else []
    holder = lock_holder(env)
    last = last_release(env)
    out(f"environment  {env.name} ({env.runtime} runtime)")
    if env.host is not None and probe is not None:
        answer = "answers" if probe.answers else "does not answer:"
        out(f"host         {env.host.describe()} {answer} {probe.detail}")
    out(f"version      {version or '-'}")
    out(f"lock         {describe_holder(holder, env.timezone) if holder is not None else 'free'}")
    if last is not None:
        ended = local_time(last.ended_at, settings.timezone)
        out(
            f"last release {last.operation} {last.version or '-'} {last.status} at {ended} "
            f"(run {last.run_id or '-'}, by {last.launched_by or '-'})"
        )
    for line in pending_recovery(env, running=holder is not None):
        out(f"pending      {line}")
    for st in statuses:
        out(f"service      {st.name:<16} {'running' if st.running else 'stopped':<8} {st.detail}")
    return 0


def host_probe(env: Environment) -> Probe | None:
    """Whether the environment's host answers (bounded by its connect timeout); None: no host."""
    if env.host is None:
        return None
    from ultra_ops.engine.hosts.ssh import SshHost
    from ultra_ops.engine.secrets import Redactor

    return SshHost.for_environment(env, redact=Redactor.for_process()).probe()


def cmd_releases(args: argparse.Namespace) -> int:
    """The environment's release records, newest first: a table or JSON."""
    from ultra_ops.engine.release.records import find_releases

    settings = settings_of(args)
    env = settings.environment(args.environment)
    records = find_releases(env)
    if args.json:
        out(json.dumps([r.to_dict() for r in records], indent=2))
        return 0
    if not records:
        out("no releases")
        return 0
    out(
        f"{'STARTED':<29} {'OPERATION':<9} {'VERSION':<22} {'PREVIOUS':<22} {'STATUS':<15} {'RUN':<8} "
        f"{'LAUNCHED BY':<16} REASON"
    )
    for r in records:
        reason = " ".join((r.reason or "").split())  # one line per record
        started = local_time(r.started_at, settings.timezone)  # the JSON keeps the record's UTC
        out(
            f"{started:<29} {r.operation:<9} {r.version or '-':<22} {r.previous_version or '-':<22} "
            f"{r.status:<15} {(r.run_id or '-')[:8]:<8} {r.launched_by or '-':<16} {reason}"
        )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop the environment's services (docker-compose down): `stop_job`, under the environment's lock."""
    settings = settings_of(args)
    env = settings.environment(args.environment)
    result = run_job(args, settings, "stop_job", env.name)
    if result.success:
        out(f"stopped {env.name}")
    return 0 if result.success else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """One release through development, staging and production (or a cycle on --environment)."""
    from ultra_ops.cli import main  # the demo's steps are commands of this CLI
    from ultra_ops.demo import run_demo

    if args.compose:
        from ultra_ops.demo_compose import LOCAL_COMPOSE_CONFIG, run_compose_demo
        from ultra_ops.engine.settings import load_settings

        if args.environment:
            raise InputError("demo --compose takes staging and production through; --environment does not apply")
        settings = load_settings(args.config or LOCAL_COMPOSE_CONFIG)
        return run_compose_demo(settings, ["--config", str(settings.path)], run=main, progress=progress, out=out)
    settings = settings_of(args)
    config = ["--config", str(settings.path)] if args.config else []
    return run_demo(settings, args.environment, config, run=main, progress=progress, out=out)


def cmd_release_branch(args: argparse.Namespace) -> int:
    """`release_branch_job`: release/vX.Y.Z from main, with its version written in."""
    from ultra_ops.engine.inputs import validate_tag
    from ultra_ops.engine.release.branches import branch_commit, release_repository
    from ultra_ops.engine.versions import release_key

    settings = settings_of(args)
    # Bad input exits 2 before a run exists: the tag, a missing repository, a branch already made.
    validate_tag(args.tag)
    release_key(args.tag)
    repo = release_repository(settings)
    if repo is None:
        raise InputError(f"no git_repo in {settings.path}: release branches need the Ultra AI repository")
    existing = branch_commit(repo, args.tag)
    if existing is not None:
        raise InputError(f"release/{args.tag} already exists in {repo} (commit {existing[:12]})")
    result = run_job(
        args,
        settings,
        "release_branch_job",
        None,
        ops_config("create_release_branch", {"tag": args.tag}),
        version=args.tag,
    )
    made = result.outputs.get("create_release_branch", {})
    if result.success:
        updated = ", ".join(made.get("updated") or []) or "no file names a version"
        out(
            f"release/{args.tag} created at {str(made.get('commit', ''))[:12]} from main "
            f"{str(made.get('base', ''))[:12]} ({updated})" + ("; pushed to origin" if made.get("pushed") else "")
        )
    return 0 if result.success else 1


def cmd_checklist(args: argparse.Namespace) -> int:
    """`checklist_job`: every item of the pre-release checklist with its evidence."""
    from ultra_ops.engine.deployed import deployed_version
    from ultra_ops.engine.inputs import validate_tag
    from ultra_ops.engine.release.checklist import ChecklistReport

    settings = settings_of(args)
    env = settings.environment(args.environment)
    if args.tag:
        validate_tag(args.tag)
    result = run_job(
        args,
        settings,
        "checklist_job",
        env.name,
        ops_config("checklist_items", {"tag": args.tag}),
        version=args.tag or deployed_version(env),
    )
    reports = [o["checklist"] for o in result.asset_metadata if "checklist" in o]
    if reports:
        out(json.dumps(reports[-1], indent=2) if args.json else ChecklistReport.from_dict(reports[-1]).table())
    return 0 if result.success else 1
