"""Ops of the backups domain: each calls the engine and reports what it wrote as metadata."""

from dagster import MetadataValue, OpExecutionContext, op

from ultra_ops.defs.shared.resources import EnvironmentLocks, OpsSettings
from ultra_ops.defs.shared.steps import environment_of, load, step
from ultra_ops.engine.backups.create import create_backup
from ultra_ops.engine.release.rollback import deployed_version


@op
def backup_create(context: OpExecutionContext, settings: OpsSettings, locks: EnvironmentLocks) -> None:
    """A backup under the environment's lock: never in the middle of a deploy's migration or a restore."""
    loaded = load(settings)
    with step(context, environment_of(context), str(loaded.path), locks=locks, operation="backup") as s:
        info = create_backup(s.env, version=deployed_version(s.env), label="manual", log=s.log, redact=s.redact)
        s.log.info(f"backup {info.id} of {s.env.name} written ({info.size_bytes / 1e6:.1f} MB)")
    context.add_output_metadata({"backup_id": info.id, "size_bytes": info.size_bytes,
                                 "backup": MetadataValue.json(info.to_dict())})


@op
def recover_environment(context: OpExecutionContext, settings: OpsSettings, locks: EnvironmentLocks) -> None:
    """Finish or undo what a dead run left: an interrupted database swap, scratch databases, temp
    folders. Every operation that takes the environment's lock does this first; this job does only that."""
    loaded = load(settings)
    with step(context, environment_of(context), str(loaded.path), locks=locks, operation="recover") as s:
        done = locks.recovered(s.env.name)
        if not done:
            s.log.info(f"{s.env.name}: nothing to recover")
    context.add_output_metadata({"recovered": MetadataValue.json(done), "count": len(done)})
