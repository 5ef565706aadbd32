"""Resources of the release jobs: the settings file and the per-environment lock."""


from collections.abc import Iterator
from contextlib import contextmanager

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from ultra_ops.engine.locks import EnvironmentLock
from ultra_ops.engine.settings import Environment, Settings, load_settings


class OpsSettings(ConfigurableResource):
    """Where the ultra_ops config file is; empty means ULTRA_OPS_CONFIG, then ./ultra_ops.toml."""

    config_path: str = Field(default="", description="Path of the ultra_ops TOML config file")

    def load(self) -> Settings:
        return load_settings(self.config_path or None)


class EnvironmentLocks(ConfigurableResource):
    """Holds environment locks for the whole run and releases them when the run ends, however it ends.

    The release jobs run their steps in one process (in_process_executor), so a lock taken by the
    first step is still held by the last one; the kernel frees it if the run process dies.
    """

    _held: list[EnvironmentLock] = PrivateAttr(default_factory=list)

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator["EnvironmentLocks"]:
        try:
            yield self
        finally:
            for lock in self._held:
                lock.release()
            self._held.clear()

    def acquire(self, env: Environment, *, operation: str, run_id: str) -> EnvironmentLock:
        lock = EnvironmentLock(env, operation=operation, run_id=run_id).acquire()
        self._held.append(lock)
        return lock
