"""What every command shares: output, the config it names, and running a job as the UI would file it."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import Any

from ultra_ops.engine.errors import InputError, OperationError
from ultra_ops.engine.settings import Settings, load_settings


class UsageError(InputError):
    pass


class Parser(argparse.ArgumentParser):
    # argparse exits 2 on bad usage already; route it through our one-line error format.
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def out(text: str) -> None:
    print(text, flush=True)


def progress(text: str) -> None:
    print(f"ultra-ops: {text}", file=sys.stderr, flush=True)


_gc_paused_for_startup = False  # set by run(): the console script starts with the collector off


def pause_gc_for_startup() -> None:
    """Keep the garbage collector off until the run starts (end_startup): the console script's start."""
    global _gc_paused_for_startup
    gc.disable()
    _gc_paused_for_startup = True


def end_startup() -> None:
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


def settings_of(args: argparse.Namespace) -> Settings:
    """The config the command names (--config, else ULTRA_OPS_CONFIG, else ./ultra_ops.toml); its
    runs read the same file (run_job names it in the `settings` resource's run config)."""
    return load_settings(args.config)


def launched_by_user() -> str:
    from ultra_ops.engine.owners import this_user

    return this_user()


def run_job(
    args: argparse.Namespace,
    settings: Settings,
    job: str,
    environment: str | None,
    run_config: dict[str, Any] | None = None,
    *,
    partition: str | None = None,
    partitioned: bool = True,
    **tag_values: Any,
):  # noqa: ANN202
    """Run `job` for one environment partition (or, with None, a job of no environment), tagged
    before it starts, as the UI would file it. `partitioned=False`: a job with no partitions (asset
    checks alone), told its environment by tag."""
    from ultra_ops.defs.shared.launch import ensure_dagster_home, launch
    from ultra_ops.defs.shared.tags import OPERATION, PARTITION, VERSION, launch_tags, launcher_tags
    from ultra_ops.engine.envfile import read_env_file

    operation = job.removesuffix("_job")
    if environment is None:
        tags = {OPERATION: operation, **launcher_tags(launched_by_user())}
        if tag_values.get("version"):
            tags[VERSION] = tag_values["version"]
    else:
        # An env file the run could not read is bad input: refused here, before a run exists.
        read_env_file(settings.environment(environment).env_file)
        tags = launch_tags(environment, operation, launched_by=launched_by_user(), **tag_values)
    from ultra_ops.platform.attach import attach

    attach()  # while the platform runs on this host, its instance is the one to record on
    home = ensure_dagster_home(settings.path)
    if partition:
        tags[PARTITION] = partition  # a job partitioned by more than the environment
    if not partitioned:
        tags.pop(PARTITION, None)
    config = {
        **(run_config or {}),
        "resources": {
            "settings": {"config": {"config_path": str(settings.path)}},  # the file this command loaded
            "locks": {"config": {"lock_wait_s": float(getattr(args, "lock_wait", 0) or 0)}},
        },
    }
    progress(f"starting {job}" + (f" for {environment}" if environment else "") + f" (Dagster home {home})")
    instance = _instance(home)
    end_startup()
    result = launch(job, config, tags, instance=instance)
    state = "succeeded" if result.success else "FAILED"
    progress(f"run {result.run_id} {state}")
    if result.interrupted and environment is not None:
        from ultra_ops.engine.release.interrupts import interrupted_state

        result.message = interrupted_state(settings.environment(environment), result.run_id)
    if not result.success:
        print(f"error: {result.message}", file=sys.stderr, flush=True)
    return result


def _instance(home: Path):  # noqa: ANN202 - a DagsterInstance (dagster is imported late)
    """The instance in `home`, or one line saying why it cannot be opened (storage down, a bad
    dagster.yaml) instead of Dagster's traceback."""
    from dagster import DagsterInstance

    try:
        return DagsterInstance.get()
    except Exception as exc:  # noqa: BLE001 - whatever Dagster raises, the operator gets one line
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        if os.environ.get("DAGSTER_PG_PASSWORD"):
            first = first.replace(os.environ["DAGSTER_PG_PASSWORD"], "***")
        raise OperationError(f"cannot open the Dagster instance in {home}: {first[:300]}") from None


def ops_config(op: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"ops": {op: {"config": config}}}
