"""Ops of the backups domain: each calls the engine and reports what it wrote as metadata."""

from dagster import MetadataValue, OpExecutionContext, op

from ultra_ops.defs.backups.config import PinConfig, PruneConfig, VerifyBackupsConfig
from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings
from ultra_ops.defs.shared.steps import partition_step
from ultra_ops.engine.backups.create import create_backup
from ultra_ops.engine.backups.recover import check_reachable, settle_services
from ultra_ops.engine.backups.retention import pin, prune_backups
from ultra_ops.engine.backups.store import list_backups, verify_backup
from ultra_ops.engine.deployed import deployed_version
from ultra_ops.engine.errors import IntegrityError
from ultra_ops.engine.release.records import kept_for_rollback


@op
def backup_create(context: OpExecutionContext, settings: OpsSettings, locks: EnvironmentLocks) -> None:
    """A backup under the environment's lock: never in the middle of a deploy's migration or a restore."""
    with partition_step(context, settings, locks=locks, operation="backup") as s:
        info = create_backup(s.env, version=deployed_version(s.env), label="manual", log=s.log, redact=s.redact)
        s.log.info(f"backup {info.id} of {s.env.name} written ({info.size_bytes / 1e6:.1f} MB)")
    context.add_output_metadata(
        {"backup_id": info.id, "size_bytes": info.size_bytes, "backup": MetadataValue.json(info.to_dict())}
    )


@op
def recover_environment(context: OpExecutionContext, settings: OpsSettings, locks: EnvironmentLocks) -> None:
    """Finish or undo what a dead run left: an interrupted database swap, scratch databases, temp
    folders, its release record. Every operation that takes the environment's lock does this first;
    this job also puts the services back as the last completed operation left them, and fails when
    it could not look (the database server does not answer)."""
    with partition_step(context, settings, locks=locks, operation="recover") as s:
        check_reachable(s.env, s.redact)
        started, services = settle_services(s.env, context.run_id, log=s.log, redact=s.redact)
        done = locks.recovered(s.env.name) + started
        if not done:
            s.log.info(f"{s.env.name}: nothing to recover")
        s.log.info(f"{s.env.name}: {services}")
    context.add_output_metadata({"recovered": MetadataValue.json(done), "count": len(done), "services": services})


@op
def backups_prune(
    context: OpExecutionContext, config: PruneConfig, settings: OpsSettings, locks: EnvironmentLocks
) -> None:
    """Apply the retention policy under the lock (or only show what it would remove, with dry_run)."""
    with partition_step(context, settings, locks=locks, operation="prune backups") as s:
        decisions = prune_backups(
            s.env,
            protected=kept_for_rollback(s.env),
            dry_run=config.dry_run,
            log=s.log,
        )
    removed = [d for d in decisions if not d.keep]
    context.add_output_metadata(
        {
            "dry_run": config.dry_run,
            "kept": len(decisions) - len(removed),
            "removed": len(removed),
            "decisions": MetadataValue.json([d.__dict__ for d in decisions]),
        }
    )


@op
def backups_pin(context: OpExecutionContext, config: PinConfig, settings: OpsSettings, locks: EnvironmentLocks) -> None:
    """Pin a backup so retention keeps it forever, or unpin it."""
    with partition_step(context, settings, locks=locks, operation="pin backup") as s:
        pins = pin(s.env, config.backup_id, keep_forever=config.pinned)
        s.log.info(f"backup {config.backup_id} {'pinned' if config.pinned else 'unpinned'}")
    context.add_output_metadata(
        {"backup_id": config.backup_id, "pinned": config.pinned, "pins": MetadataValue.json(sorted(pins))}
    )


@op
def backups_verify(context: OpExecutionContext, config: VerifyBackupsConfig, settings: OpsSettings) -> None:
    """Check every file of the backups against their manifests' sizes and sha256 (reads only)."""
    with partition_step(context, settings) as s:
        ids = [config.backup_id] if config.backup_id else [b.id for b in list_backups(s.env)]
        results = {}
        for backup_id in ids:
            try:
                verify_backup(s.env, backup_id)
                results[backup_id] = "ok"
            except IntegrityError as exc:
                results[backup_id] = str(exc)
        bad = {k: v for k, v in results.items() if v != "ok"}
        context.add_output_metadata(
            {"checked": len(results), "damaged": len(bad), "results": MetadataValue.json(results)}
        )
        if bad:
            raise IntegrityError("; ".join(bad.values()))
        s.log.info(f"{len(results)} backups of {s.env.name} verified")
