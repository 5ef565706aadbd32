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
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
PG = {"host": "127.0.0.1", "port": 5432, "user": os.environ.get("ULTRA_TEST_PGUSER", "postgres")}
REDIS_URL = "redis://127.0.0.1:6379/0"
ENVIRONMENT = "staging"
TARGET = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin() -> psycopg.Connection:
    return psycopg.connect(**PG, dbname="postgres", autocommit=True)


def _config(folder: Path, database: str, port: int) -> Path:
    """The shape of ultra_ops_tests/conftest.py's write_config, plus one API endpoint."""
    text = f"""
        timezone = "UTC"

        [environments.{ENVIRONMENT}]
        runtime = "process"
        root = "{folder / "root"}"
        backup_dir = "{folder / "backups"}"
        log_dir = "{folder / "logs"}"
        state_dir = "{folder / "state"}"
        migrations = "{REPO / "ultra_ops" / "sample_service" / "migrations"}"
        health_timeout_s = 20
        required_env_keys = ["ULTRA_VERSION"]

        [environments.{ENVIRONMENT}.database]
        host = "{PG["host"]}"
        port = {PG["port"]}
        name = "{database}"
        user = "{PG["user"]}"
        probe_queries = ["SELECT 1"]

        [environments.{ENVIRONMENT}.redis]
        url = "{REDIS_URL}"

        [environments.{ENVIRONMENT}.processes.backend]
        command = ["{sys.executable}", "-m", "ultra_ops.sample_service"]
        port = {port}
        health_url = "http://127.0.0.1:{port}/health"

        [environments.{ENVIRONMENT}.verify]
        timeout_s = 3
        retries = 1
        backoff_s = 0.1
        health_urls = ["http://127.0.0.1:{port}/health?detail=true"]
        endpoints = [{{ name = "prompts", url = "http://127.0.0.1:{port}/api/v1/prompts", expect_status = 200 }}]
    """
    path = folder / "ultra_ops.toml"
    path.write_text(textwrap.dedent(text))
    (folder / "root").mkdir(exist_ok=True)
    return path


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
        config = _config(folder, database, _free_port())
        home = folder / "dagster_home"
        env = {**os.environ, "DAGSTER_HOME": str(home)}
        env.pop("ULTRA_OPS_CONFIG", None)
        ops = [cli, "--environment", ENVIRONMENT, "--config", str(config)]

        with _admin() as conn:
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
            with _admin() as conn:
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
