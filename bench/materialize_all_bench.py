"""Materializing every asset of one environment for one day, end to end; and the code location's load
time against `import dagster` (bench/import_bench.py's measurement, reused).

The assets are found in the code location, not listed here: every materializable asset whose
partitions hold the environment (a static environment partition), the day (a daily partition) or
both (a multi-partition of the two). Assets with the same partitions definition share one run, as
Dagster's implicit asset job requires; each run is the real `dagster asset materialize -m
ultra_ops.definitions --select ... --partition KEY`, a fresh process timed from outside (code location
load included), once with the code location's default executor (a process per step, as a UI launch)
and once with the in-process executor (`--config-json`), alternating. Afterwards the instance must
hold a materialization of every asset for its key.

The environment is the cli_bench's (bench/cli_bench.py): a process-runtime environment running the
sample service on a free port, a database of its own created here and dropped at the end, Redis,
a DAGSTER_HOME in the temp folder; `ultra-ops init` and `ultra-ops deploy --tag v1.0.0 --skip-build`
prepare it, and `--log-mb` MB of the day's logs are written for the log archive to take.

    .venv/bin/python bench/materialize_all_bench.py [--repeat 3] [--log-mb 20] [--import-repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from cli_bench import ENVIRONMENT, REPO, _config, _timed  # the same environment
from import_bench import CASES, best_of  # the same load-time measurement

from ultra_ops_tests.support.databases import admin  # cli_bench put the repository on sys.path
from ultra_ops_tests.support.ports import free_port

DAY = date.today() - timedelta(days=1)  # yesterday, as the daily schedules materialize it
# The code location's default executor starts a process per step, as a UI launch does; the in-process
# executor runs every step in the run's process, as ultra-ops's own CLI runs do.
VARIANTS = {
    "default executor (a process per step)": [],
    "in-process executor": ["--config-json", json.dumps({"execution": {"config": {"in_process": {}}}})],
}


def partition_key_for(partitions_def, environment: str, day: date) -> str | None:  # noqa: ANN001
    """The key of `partitions_def` that stands for (environment, day), or None if it has none."""
    from dagster import MultiPartitionKey, MultiPartitionsDefinition, StaticPartitionsDefinition
    from dagster._core.definitions.partitions.definition import TimeWindowPartitionsDefinition

    def one(pd) -> str | None:  # noqa: ANN001
        if isinstance(pd, StaticPartitionsDefinition):
            return environment if environment in pd.get_partition_keys() else None
        if isinstance(pd, TimeWindowPartitionsDefinition):
            key = day.strftime(pd.fmt)
            return key if pd.has_partition_key(key) else None
        return None

    if partitions_def is None:
        return None
    if isinstance(partitions_def, MultiPartitionsDefinition):
        keys = {d.name: one(d.partitions_def) for d in partitions_def.partitions_defs}
        return None if None in keys.values() else MultiPartitionKey(keys)
    return one(partitions_def)


def asset_groups(environment: str, day: date) -> list[tuple[str, list[str]]]:
    """(partition key, asset keys) for every materializable asset partitioned by the environment/day."""
    from ultra_ops.definitions import defs

    graph = defs.resolve_asset_graph()
    groups: dict[str, list[str]] = {}
    for key in sorted(graph.materializable_asset_keys):
        partition = partition_key_for(graph.get(key).partitions_def, environment, day)
        if partition is not None:
            groups.setdefault(str(partition), []).append(key.to_user_string())
    return sorted(groups.items())


def _write_logs(log_dir: Path, day: date, megabytes: int) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    line = f"{day}T10:00:00Z INFO [backend] request_id=%016x GET /api/v1/prompts 200 took=%.1fms\n"
    for name in ("backend", "worker"):
        with open(log_dir / f"{name}.log.{day:%Y%m%d}", "w") as f:
            for i in range(megabytes * 1_000_000 // 2 // 80):
                f.write(line % (i * 2654435761 % (1 << 64), (i % 997) / 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of materializing everything (default 3)")
    parser.add_argument("--log-mb", type=int, default=20, help="MB of the day's logs per round (default 20)")
    parser.add_argument("--import-repeat", type=int, default=7, help="import_bench's best-of count (default 7)")
    args = parser.parse_args()

    bindir = Path(sys.executable).parent
    cli, dagster = str(bindir / "ultra-ops"), str(bindir / "dagster")
    database = f"uo_bench_mat_{uuid.uuid4().hex[:10]}"
    rounds: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="uo_materialize_bench_") as tmp:
        folder = Path(tmp)
        config = _config(folder, database, free_port())
        env = {**os.environ, "DAGSTER_HOME": str(folder / "dagster_home"), "ULTRA_OPS_CONFIG": str(config)}
        os.environ["ULTRA_OPS_CONFIG"] = str(config)  # the code location loaded below reads the same config
        ops = ["--environment", ENVIRONMENT, "--config", str(config)]
        groups = asset_groups(ENVIRONMENT, DAY)
        print(f"{sum(len(a) for _, a in groups)} assets of {ENVIRONMENT} for {DAY}, in {len(groups)} runs:")
        for partition, assets in groups:
            print(f"  {partition}: {', '.join(assets)}")

        with admin() as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        deployed = False
        try:
            _timed([cli, "init", *ops], env, "ultra-ops init")
            deployed = True  # from here on the service may be running: stop it however we leave
            _timed([cli, "deploy", *ops, "--tag", "v1.0.0", "--skip-build"], env, "ultra-ops deploy")
            for i in range(args.repeat):
                for variant, extra in VARIANTS.items():
                    _write_logs(folder / "logs", DAY, args.log_mb)
                    times = {}
                    for partition, assets in groups:
                        argv = [
                            dagster,
                            "asset",
                            "materialize",
                            "-m",
                            "ultra_ops.definitions",
                            "--select",
                            ",".join(assets),
                            "--partition",
                            partition,
                            *extra,
                        ]
                        times[partition] = _materialize(argv, env)
                    rounds.setdefault(variant, []).append(times)
                    print(
                        f"round {i + 1}, {variant}: {sum(times.values()):.2f} s  "
                        + "  ".join(f"{p} {t:.2f} s" for p, t in times.items()),
                        flush=True,
                    )
            missing = _check_materialized(folder / "dagster_home", groups, args.repeat * len(VARIANTS))
        finally:
            if deployed:
                subprocess.run([cli, "stop", *ops], env=env, capture_output=True, cwd=REPO, timeout=120)
            with admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    assets = sum(len(a) for _, a in groups)
    print(f"materialized every round: {assets - len(missing)} of {assets} assets")
    for line in missing:
        print(f"  NOT materialized: {line}")
    for variant, runs in rounds.items():
        totals = [sum(r.values()) for r in runs]
        print(
            f"every asset of one environment for one day, {variant}: median {statistics.median(totals):.2f} s "
            f"[{', '.join(f'{t:.2f}' for t in totals)}], {len(groups)} runs, each a fresh process"
        )

    best_of(CASES["import ultra_ops.definitions"], 1)  # warm the bytecode caches, as import_bench does
    load = {name: best_of(CASES[name], args.import_repeat) for name in CASES}
    for name, seconds in load.items():
        print(f"{name:<32} {seconds * 1000:8.0f} ms (best of {args.import_repeat})")
    print(
        f"code location load / import dagster: "
        f"{load['import ultra_ops.definitions'] / load['import dagster']:.2f} (target <= 1.6)"
    )


def _materialize(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one `dagster asset materialize`; a failed run is reported by _check_materialized."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO, timeout=1800)
    return time.perf_counter() - start


def _check_materialized(home: Path, groups: list[tuple[str, list[str]]], rounds: int) -> list[str]:
    """Every asset must have a materialization of its key per round; the others, named with the reason
    their step gave, are returned (an asset may refuse the day: the backups asset takes only today's)."""
    from dagster import AssetKey, DagsterEventType, DagsterInstance

    missing = []
    with DagsterInstance.from_config(str(home)) as instance:
        reasons = {}
        for run in instance.get_runs():
            for event in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE):
                error = event.dagster_event.step_failure_data.error
                user = event.dagster_event.step_failure_data.user_failure_data
                text = (user.description if user and user.description else error.message if error else "").strip()
                reasons[event.step_key] = text.splitlines()[0] if text else "failed"
        for partition, assets in groups:
            for asset in assets:
                records = instance.fetch_materializations(AssetKey.from_user_string(asset), limit=rounds + 1).records
                got = sum(1 for r in records if r.partition_key == partition)
                if got != rounds:
                    why = reasons.get(asset, "not run: an upstream step failed" if asset not in reasons else "")
                    missing.append(f"{asset} ({partition}): {got} of {rounds} materialized; {why}")
    return missing


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"(bench took {time.perf_counter() - start:.0f} s)")
