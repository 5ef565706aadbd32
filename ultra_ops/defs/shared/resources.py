"""Resources shared by every domain: the run's config and the per-environment locks."""

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dagster import ConfigurableResource, InitResourceContext, ResourceDependency
from pydantic import Field, PrivateAttr

from ultra_ops.engine import runs
from ultra_ops.engine.crash_points import crash_point
from ultra_ops.engine.hosts.reach import Reaches
from ultra_ops.engine.locks import EnvironmentLock
from ultra_ops.engine.release.interrupts import finish_run
from ultra_ops.engine.release.recover import recover_environment
from ultra_ops.engine.secrets import Log
from ultra_ops.engine.settings import Environment, Settings, load_settings


@dataclasses.dataclass(frozen=True)
class RunSettings(Settings):
    """The run's config, and how the run reaches its environments: the connection to a hosted
    environment's host and the tunnels to its loopback ports (engine/hosts/reach.py), opened by the
    first step that uses that environment and kept for the run's later steps (the in-process
    executor runs them all here), closed when the run ends."""

    reaches: Reaches = dataclasses.field(default_factory=Reaches, compare=False, repr=False)


class OpsSettings(ConfigurableResource):
    """The run's config: the file the launcher names (the CLI names the one it loaded), else the
    operator's default (ULTRA_OPS_CONFIG, then ./ultra_ops.toml).

    Read once per run, on the first step that asks, and handed to every later step: a run sees one
    version of the file from its first step to its last. Dagster makes a new instance for each run.
    It owns the run's reaches of hosted environments, closed at teardown; the locks resource depends
    on it, so it is torn down after the locks (whose release may still settle an environment
    through its tunnels).
    """

    # None, not "": the launchpad pre-fills every field with a default, and only an unset one stays
    # out of the form an operator sees (the CLI names its file here; the UI uses the default).
    config_path: str | None = Field(
        default=None,
        description="Path of the ultra_ops TOML config file; empty: ULTRA_OPS_CONFIG, then ./ultra_ops.toml",
    )

    _loaded: RunSettings | None = PrivateAttr(default=None)
    _run_id: str = PrivateAttr(default="")

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator["OpsSettings"]:
        self._run_id = context.run.run_id if context.run is not None else ""  # named in its SSH socket folder
        try:
            yield self
        finally:
            if self._loaded is not None:
                self._loaded.reaches.close()

    def load(self) -> RunSettings:
        if self._loaded is None:
            loaded = load_settings(self.config_path or None)
            fields = {f.name: getattr(loaded, f.name) for f in dataclasses.fields(Settings)}
            self._loaded = RunSettings(**fields, reaches=Reaches(run=self._run_id))
        return self._loaded


class EnvironmentLocks(ConfigurableResource):
    """The environment locks a run holds, from the first step that changes an environment until the
    run ends, however it ends.

    Every step that changes an environment asks for its lock, not only the first one: a run
    re-executed from a failed step (or an op selection) starts at that step and must hold the lock
    too. Steps run in one process (in_process_executor), so a lock taken by one step is still held
    by the next; the kernel frees it if the run process dies. A lock on the environment's host can
    be lost while the run holds it (hosts/lock.py): every step checks it before it starts, and a
    step that finds it lost fails there, before it changes anything.
    """

    # Set up before and torn down after this resource: see OpsSettings.
    settings: ResourceDependency[OpsSettings]
    # None (not a sentinel number): kept out of the launchpad's form, which the config file covers.
    lock_wait_s: float | None = Field(
        default=None,
        description="Seconds to wait for another operation's lock before refusing (0 refuses at "
        "once); empty: the environment's lock_wait_s from the config file",
    )

    _held: dict[str, EnvironmentLock] = PrivateAttr(default_factory=dict)
    _recovered: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator["EnvironmentLocks"]:
        try:
            yield self
        finally:
            for lock in self._held.values():
                try:
                    finish_run(lock.env, lock.holder["run_id"])
                finally:
                    lock.release()
            self._held.clear()

    def hold(
        self,
        env: Environment,
        *,
        operation: str,
        run_id: str,
        log: Log | None = None,
        draft: Callable[[Environment], dict[str, Any]] | None = None,
        launched_by: str | None = None,
    ) -> EnvironmentLock:
        """The environment's lock for this run: taken on first use, then held until the run ends.
        Taking it first recovers what a dead run left (an interrupted database swap, scratch
        databases, temp folders, its release record), so every operation starts from a consistent
        environment; then this run's marker says who holds it (runs.py) until the run ends.
        `draft`: a deploy's or rollback's release record as it would be left now (called after the
        recovery, which may change the version in place), written with the marker, so a run
        killed before its first step is recorded too. Not called when the run holds the lock.
        `launched_by`: who launched this run, for the record of a rollback a lost deploy owed, which
        the recovery does.
        Raises LockLost when the run took the lock earlier and has lost it since."""
        lock = self._held.get(env.name)
        if lock is not None:
            lock.check()
        else:
            wait_s = self.lock_wait_s if self.lock_wait_s is not None and self.lock_wait_s >= 0 else env.lock_wait_s
            lock = EnvironmentLock(env, operation=operation, run_id=run_id).acquire(wait_s=wait_s, log=log)
            try:
                self._recovered[env.name] = recover_environment(env, log=log, run_id=run_id, launched_by=launched_by)
                runs.begin(env, operation=operation, run_id=run_id, record=draft(env) if draft else None)
            except BaseException:
                lock.release()
                raise
            self._held[env.name] = lock
            crash_point("locked")
        return lock

    def recovered(self, environment: str) -> list[str]:
        """What taking the environment's lock recovered in this run, one line per thing done."""
        return list(self._recovered.get(environment, []))
