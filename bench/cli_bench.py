"""`ultra-ops verify` end to end against `python -c "import dagster"`, fresh processes, same run.

The bench sets up its own environment in a temp folder: a config with one process-runtime
environment ("staging") running the sample service on a free port, a database of its own
(created here, dropped at the end), and a DAGSTER_HOME of its own. `ultra-ops init` and
`ultra-ops deploy --tag v1.0.0 --skip-build` prepare it; then the two commands below run in turn,
A B A B ..., after one warm-up each, every one a new process timed from outside (wall time from
start to exit, interpreter start-up included):

    A  .venv/bin/ultra-ops verify --environment staging --config C   (must exit 0, every run)
    B  .venv/bin/python -c "import dagster"

Printed: min/median/max of each, the median of the per-pair ratios A/B (the figure quoted;
target at most 2.0) and the ratio of the medians. Afterwards `ultra-ops stop` stops the service
and the database is dropped. Run from the repo root:

    .venv/bin/python bench/cli_bench.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/cli_bench.py`
from ultra_ops_tests.support.configs import write_config
from ultra_ops_tests.support.databases import admin
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import REPO

ENVIRONMENT = "staging"
TARGET = 2.0


def _config(folder: Path, database: str, port: int) -> Path:
    """The tests' write_config, plus one API endpoint."""
    api = f"http://127.0.0.1:{port}/api/v1/prompts"
    endpoint = f'endpoints = [{{ name = "prompts", url = "{api}", expect_status = 200 }}]'
    return write_config(folder, database, environment=ENVIRONMENT, port=port, verify_extra=endpoint)


_last_output: dict[str, str] = {}


def _timed(argv: list[str], env: dict[str, str], what: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{what} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    _last_output[argv[1]] = proc.stdout
    return elapsed


def _spread(values: list[float]) -> str:
    return (
        f"min {min(values) * 1000:5.0f}  median {statistics.median(values) * 1000:5.0f}  "
        f"max {max(values) * 1000:5.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", "-n", type=int, default=7, help="counted runs of each command (default 7)")
    args = parser.parse_args()

    bindir = Path(sys.executable).parent
    cli = str(bindir / "ultra-ops")
    database = f"uo_bench_cli_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="uo_cli_bench_") as tmp:
        folder = Path(tmp)
        config = _config(folder, database, free_port())
        home = folder / "dagster_home"
        env = {**os.environ, "DAGSTER_HOME": str(home)}
        env.pop("ULTRA_OPS_CONFIG", None)
        ops = [cli, "--environment", ENVIRONMENT, "--config", str(config)]

        with admin() as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        deployed = False
        try:
            _timed([cli, "init", *ops[1:]], env, "ultra-ops init")
            deployed = True  # from here on the service may be running: stop it however we leave
            _timed([cli, "deploy", *ops[1:], "--tag", "v1.0.0", "--skip-build"], env, "ultra-ops deploy")

            verify = [cli, "verify", *ops[1:]]
            baseline = [sys.executable, "-c", "import dagster"]
            _timed(verify, env, "ultra-ops verify (warm-up)")
            _timed(baseline, env, "import dagster (warm-up)")
            a_times, b_times = [], []
            for i in range(args.runs):
                a_times.append(_timed(verify, env, f"ultra-ops verify (run {i + 1})"))
                b_times.append(_timed(baseline, env, "import dagster"))
        finally:
            if deployed:
                subprocess.run([cli, "stop", *ops[1:]], env=env, capture_output=True, cwd=REPO)
            with admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    ratios = [a / b for a, b in zip(a_times, b_times, strict=True)]
    median_ratio = statistics.median(ratios)
    print("the last verify printed:\n" + textwrap.indent(_last_output["verify"].strip(), "    "))
    print(f"{args.runs} runs each, alternating, after one warm-up each; every verify exited 0")
    print(f"A ultra-ops verify            {_spread(a_times)}")
    print(f"B python -c 'import dagster'  {_spread(b_times)}")
    print(f"A/B per pair                  min {min(ratios):.2f}  median {median_ratio:.2f}  max {max(ratios):.2f}")
    print(f"ratio of medians              {statistics.median(a_times) / statistics.median(b_times):.2f}")
    print(f"target median A/B <= {TARGET}: {'met' if median_ratio <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
