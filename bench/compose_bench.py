"""Benchmark: the compose runtime on this machine's dockerd, against bare Docker tools in the same run.

Not part of the tests. Run:  .venv/bin/python bench/compose_bench.py [--parts deploy,downtime,build]
                                 [--size-mb 100] [--runs 3]

Each part makes a compose environment of its own from deploy/ultra_ops.compose-local.toml (its own
project name, free published ports, temp folder, stand-in Ultra AI repository: the tests' helper
ultra_ops_tests/support/docker.py), `ultra-ops init`s it, and removes it at the end (`down -v`, its
images), also when it fails. Every ultra-ops command runs as the operator runs it: a fresh process.

deploy    `ultra-ops deploy --tag vX --skip-tests --skip-build` of a new version whose image is built
          already, against a bare `docker-compose up -d` of the same image (another tag of it) followed
          by the same health wait (the runtime's wait_healthy: /health polled every 0.5 s). Alternating,
          --runs pairs; the ratio is what ultra_ops adds (backup, migrations, verification, records).
downtime  a database of about --size-mb MB (a bulk table beside the service's schema) in the project's
          PostgreSQL; the longest gap between two successful /health answers, polled every 50 ms by a
          separate process, during `ultra-ops deploy` of a new version and during `ultra-ops rollback
          --yes` (to the backup that deploy took). Baseline: the container's own start time, `docker
          start` of the stopped backend to its first /health answer (same 50 ms poll), best of 3.
build     the deploy's build step (release_source + ComposeRuntime.build: git archive of the release's
          commit, `docker-compose build`) against a bare `docker build` of the same kind of context (a
          checkout of a release's commit, exported untimed). Each build is of a new commit that changes
          a file under backend/, so both rebuild the layers from `COPY backend/` on (the base and the
          pip layer come from the cache, as in a real release).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from rollback_downtime_bench import Poller, fill_bulk  # noqa: E402 - the same poller and data

from ultra_ops.demo_calendar import plan_release  # noqa: E402
from ultra_ops.engine.envfile import read_env_file  # noqa: E402
from ultra_ops.engine.release.source import release_source  # noqa: E402
from ultra_ops.engine.runtimes.compose import ComposeRuntime  # noqa: E402
from ultra_ops.engine.secrets import NullLog  # noqa: E402
from ultra_ops.engine.settings import Environment, load_settings  # noqa: E402
from ultra_ops_tests.support.docker import ComposeEnvironment, compose_environment, docker, docker_unavailable  # noqa: E402

DEPLOY_LABELS = ("ultra-ops deploy", "bare up + health wait")
BUILD_LABELS = ("ultra-ops build step", "docker build")
LOG_DIR: Path | None = None
CLI_ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Bench:
    """One compose environment of the bench's own, initialised; versions made as the calendar makes them."""

    def __init__(self, work: Path) -> None:
        self.env: ComposeEnvironment = compose_environment(work)
        # docker stats counts the page cache of the generated data in PostgreSQL's memory (1 GB of
        # data: ~1 GB): the shipped 512 MB limit would fail the deploy's verification at --size-mb 1000.
        config = self.env.config.read_text()
        self.env.config.write_text(config.replace("memory_mb = 512", "memory_mb = 4096"))
        self.minor = 0

    def ops(self, *argv: str, timeout: float = 1800) -> str:
        args = [
            sys.executable,
            "-m",
            "ultra_ops.cli",
            *argv,
            "-e",
            self.env.environment,
            "--config",
            str(self.env.config),
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=CLI_ENV, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"ultra-ops {' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        if LOG_DIR is not None:  # --keep-output: each command's output, to see where its time goes
            (LOG_DIR / f"{time.strftime('%H%M%S')}-{argv[0]}.log").write_text(done.stdout + done.stderr)
        return done.stdout + done.stderr

    def release(self, touch_backend: bool = False) -> str:
        """The next version: its changelog on main (and a changed backend file), then its branch."""
        self.minor += 1
        version = self.env.version(self.minor)
        repo = self.env.repo
        if touch_backend:
            marker = repo / "backend" / "bench_marker.py"
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"VERSION = {version!r}\n")
            subprocess.run(["git", "-C", str(repo), "add", str(marker)], check=True, timeout=60)
        plan_release(repo, version)
        args = [
            sys.executable,
            "-m",
            "ultra_ops.cli",
            "release-branch",
            "--tag",
            version,
            "--config",
            str(self.env.config),
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=CLI_ENV, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"release-branch {version}: {done.stdout}{done.stderr}")
        self.env.versions.append(version)
        return version

    def settings_env(self) -> Environment:
        return load_settings(self.env.config).environment(self.env.environment)

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.env.ports['backend']}/health"

    def tag_image(self, source: str, version: str) -> None:
        done = docker("tag", f"ultra-ai/backend:{source}", f"ultra-ai/backend:{version}")
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        if version not in self.env.versions:
            self.env.versions.append(version)

    def bare_up(self, version: str) -> None:
        """docker-compose up -d as an operator would type it, the tag given in the environment."""
        env = {**os.environ, "ULTRA_IMAGE_TAG": version, "ULTRA_ENVIRONMENT": self.env.environment}
        base = ["docker-compose", "-f", str(self.env.compose_file), "-p", self.env.project]
        args = [*base, "--env-file", str(self.env.env_file), "up", "-d", "--remove-orphans"]
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=600, env=env, cwd=self.env.compose_file.parent
        )
        if done.returncode != 0:
            raise RuntimeError(f"docker-compose up: {done.stderr}")

    def bare_stop_up(self, version: str) -> None:
        """The stop and start a rollback makes around its swap, without ultra_ops."""
        env = {**os.environ, "ULTRA_IMAGE_TAG": version, "ULTRA_ENVIRONMENT": self.env.environment}
        base = ["docker-compose", "-f", str(self.env.compose_file), "-p", self.env.project]
        base += ["--env-file", str(self.env.env_file)]
        for args in ([*base, "stop", "backend"], [*base, "up", "-d", "--remove-orphans"]):
            done = subprocess.run(
                args, capture_output=True, text=True, timeout=600, env=env, cwd=self.env.compose_file.parent
            )
            if done.returncode != 0:
                raise RuntimeError(f"docker-compose: {done.stderr}")
        wait_first_answer(self.health)

    def db(self) -> dict:
        return self.env.conninfo()


@contextlib.contextmanager
def bench_environment(name: str) -> Iterator[Bench]:
    work = Path(tempfile.mkdtemp(prefix=f"uo-compose-bench-{name}-"))
    bench = Bench(work)
    try:
        bench.ops("init")
        yield bench
    finally:
        try:
            bench.env.remove()
        finally:
            shutil.rmtree(work, ignore_errors=True)


def step_times(bench: Bench, runs: int = 2) -> None:
    """Where the last runs' time went: each step's duration from the Dagster run storage."""
    from dagster import DagsterInstance

    home = bench.env.config.parent / ".dagster_home"
    if not home.is_dir():
        return
    with DagsterInstance.from_config(str(home)) as instance:
        # The releases' branches are runs too: only the operations measured.
        measured = [r for r in instance.get_runs(limit=10) if r.job_name in ("deploy_job", "rollback_job")]
        for run in measured[:runs]:
            stats = instance.get_run_step_stats(run.run_id)
            steps = ", ".join(f"{s.step_key} {s.end_time - s.start_time:.2f}" for s in stats if s.end_time)
            record = instance.get_run_record_by_id(run.run_id)
            whole = record.end_time - record.start_time if record and record.end_time and record.start_time else 0
            print(f"  {run.job_name} {whole:.1f}s: {steps}", flush=True)


def wait_first_answer(url: str, timeout_s: float = 120) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer in {timeout_s}s")


def container_start(bench: Bench) -> float:
    """docker start of the stopped backend container to its first /health answer."""
    name = bench.env.container("backend")
    docker("stop", name, timeout=120)
    t0 = time.perf_counter()
    docker("start", name, timeout=120)
    wait_first_answer(bench.health)
    return time.perf_counter() - t0


def report_pair(name: str, labels: tuple[str, str], i: int, times: dict[str, float], pairs: list) -> None:
    """One pair's line (the first pair is a warm-up, not kept)."""
    label = "warm-up" if i == 0 else f"pair {i}"
    print(
        f"{name} {label}: {labels[0]} {times['ops']:.2f}s, {labels[1]} {times['bare']:.2f}s, "
        f"ratio {times['ops'] / times['bare']:.2f} (load {load()})",
        flush=True,
    )
    if i:
        pairs.append(times)


def report_pairs(name: str, labels: tuple[str, str], pairs: list[dict[str, float]]) -> None:
    ratios = [p["ops"] / p["bare"] for p in pairs]
    print(f"\n| {name}, {len(pairs)} pairs | {labels[0]} | {labels[1]} | ratio (median of pairs) |")
    print("|---|---|---|---|")
    print(
        f"| median [runs] | {statistics.median(p['ops'] for p in pairs):.2f} s "
        f"{[round(p['ops'], 2) for p in pairs]} | {statistics.median(p['bare'] for p in pairs):.2f} s "
        f"{[round(p['bare'], 2) for p in pairs]} | **{statistics.median(ratios):.2f}** "
        f"{[round(r, 2) for r in ratios]} |\n",
        flush=True,
    )


def part_deploy(runs: int) -> None:
    with bench_environment("deploy") as bench:
        first = bench.release()
        bench.ops("deploy", "--tag", first, "--skip-tests")  # builds the image once
        runtime = ComposeRuntime(bench.settings_env())
        pairs = []
        for i in range(runs + 1):  # the first pair is a warm-up
            version = bench.release()
            bare = f"{version}-bare"
            bench.tag_image(first, version)
            bench.tag_image(first, bare)
            order = ["ops", "bare"] if i % 2 == 0 else ["bare", "ops"]
            times = {}
            for which in order:
                t0 = time.perf_counter()
                if which == "ops":
                    bench.ops("deploy", "--tag", version, "--skip-tests", "--skip-build")
                else:
                    bench.bare_up(bare)
                    runtime.wait_healthy(120)
                times[which] = time.perf_counter() - t0
            report_pair("deploy", DEPLOY_LABELS, i, times, pairs)
        step_times(bench)
        report_pairs("deploy", DEPLOY_LABELS, pairs)


def generate(bench: Bench, size_mb: int) -> float:
    with psycopg.connect(**bench.db(), autocommit=True) as conn:
        return fill_bulk(conn, size_mb)


def polled(bench: Bench, action) -> tuple[dict, float]:  # noqa: ANN001
    poller = Poller(bench.health)
    poller.wait_ready()
    time.sleep(0.5)  # a few answers before the operation starts
    t0 = time.perf_counter()
    action()
    total = time.perf_counter() - t0
    time.sleep(0.5)
    result = poller.stop()
    return result, total


def part_downtime(size_mb: int, runs: int) -> None:
    with bench_environment("downtime") as bench:
        first = bench.release()
        bench.ops("deploy", "--tag", first, "--skip-tests")
        t0 = time.perf_counter()
        size = generate(bench, size_mb)
        print(f"database: {size:.0f} MB generated in {time.perf_counter() - t0:.1f}s", flush=True)
        starts = [container_start(bench) for _ in range(3)]
        print(f"container start (docker start to first /health answer): {[round(s, 2) for s in starts]}", flush=True)
        # What compose itself costs a swap: bare `docker-compose stop backend` then `up -d`, polled.
        bare = [polled(bench, lambda: bench.bare_stop_up(first)) for _ in range(3)]
        print(
            f"bare compose stop + up -d: longest gaps {[round(b[0]['max_gap_s'], 2) for b in bare]}, failed requests "
            f"{[(b[0]['failures'], b[0]['requests']) for b in bare]}",
            flush=True,
        )
        rows: dict[str, list[tuple[dict, float]]] = {"deploy": [], "rollback": []}
        run_starts: list[float] = []
        for _ in range(runs):
            version = bench.release()
            bench.tag_image(first, version)
            with psycopg.connect(**bench.db(), autocommit=True) as conn:
                conn.execute("CHECKPOINT")
            result = polled(bench, lambda v=version: bench.ops("deploy", "--tag", v, "--skip-tests", "--skip-build"))
            rows["deploy"].append(result)
            print(
                f"deploy: longest gap {result[0]['max_gap_s']:.2f}s, deploy {result[1]:.1f}s, "
                f"{result[0]['failures']} of {result[0]['requests']} failed (load {load()})",
                flush=True,
            )
            # The baseline again at this run's load, just before its rollback (the load moves).
            before = container_start(bench)
            run_starts.append(before)
            with psycopg.connect(**bench.db(), autocommit=True) as conn:
                conn.execute("CHECKPOINT")
            result = polled(bench, lambda: bench.ops("rollback", "--yes"))
            rows["rollback"].append(result)
            print(
                f"rollback: longest gap {result[0]['max_gap_s']:.2f}s, rollback {result[1]:.1f}s, "
                f"{result[0]['failures']} of {result[0]['requests']} failed; container start just before "
                f"{before:.2f}s (load {load()})",
                flush=True,
            )
        step_times(bench)
        print(
            "\n| database | operation | longest gap (median [runs]) | whole operation | container start (best of 3) |"
        )
        print("|---|---|---|---|---|")
        for op, results in rows.items():
            gaps = [r[0]["max_gap_s"] for r in results]
            print(
                f"| {size:.0f} MB | {op} | **{statistics.median(gaps):.2f} s** {[round(g, 2) for g in gaps]} | "
                f"{statistics.median(r[1] for r in results):.1f} s | {min(starts):.2f} s |"
            )
        gaps = [round(b[0]["max_gap_s"], 2) for b in bare]
        print(f"| {size:.0f} MB | bare compose stop + up -d | {statistics.median(gaps):.2f} s {gaps} | | |")
        over = [round(r[0]["max_gap_s"] - s, 2) for r, s in zip(rows["rollback"], run_starts, strict=True)]
        print(
            f"container start: best of 3 {min(starts):.2f} s, all {[round(s, 2) for s in starts]}, just before each "
            f"rollback {[round(s, 2) for s in run_starts]}; each rollback's gap over the start before it: {over} s"
        )
        print(flush=True)


def bare_build(bench: Bench, version: str) -> float:
    """docker build of the release's commit, exported to a folder first (untimed)."""
    with tempfile.TemporaryDirectory(prefix="uo-bare-build-") as tmp:
        src = Path(tmp)
        archive = subprocess.run(
            ["git", "-C", str(bench.env.repo), "archive", "--format=tar", f"release/{version}"],
            capture_output=True,
            timeout=120,
            check=True,
        ).stdout
        subprocess.run(["tar", "-xf", "-", "-C", str(src)], input=archive, timeout=120, check=True)
        python = read_env_file(bench.env.env_file).get("ULTRA_PYTHON_IMAGE", "ultra-local/python:3.11")
        t0 = time.perf_counter()
        done = docker(
            "build",
            "-q",
            "--build-arg",
            f"PYTHON_IMAGE={python}",
            "-t",
            f"ultra-ai/backend:{version}",
            str(src),
            timeout=1800,
        )
        elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"docker build: {done.stderr}")
    return elapsed


def ops_build(bench: Bench, version: str) -> float:
    env = bench.settings_env()
    runtime = ComposeRuntime(env)
    t0 = time.perf_counter()
    with release_source(env, version, log=NullLog()) as source:
        if source is None:
            raise RuntimeError(f"no commit of {version}")
        runtime.build(version, context=source)
    return time.perf_counter() - t0


def part_build(runs: int) -> None:
    with bench_environment("build") as bench:
        branches = subprocess.run(
            ["git", "-C", str(bench.env.repo), "branch", "--list", "release/*"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        print(f"release branches in the stand-in: {branches.stdout.split()}", flush=True)
        pairs = []
        for i in range(runs + 1):
            times = {}
            for which in ["ops", "bare"] if i % 2 == 0 else ["bare", "ops"]:
                version = bench.release(touch_backend=True)
                times[which] = (ops_build if which == "ops" else bare_build)(bench, version)
            report_pair("build", BUILD_LABELS, i, times, pairs)
        report_pairs("build", BUILD_LABELS, pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="deploy,downtime,build", help="which parts (default all three)")
    parser.add_argument("--size-mb", type=int, default=100, help="database size for downtime (default 100)")
    parser.add_argument("--runs", type=int, default=3, help="pairs (deploy, build) or operations (downtime)")
    parser.add_argument("--keep-output", type=Path, help="write each ultra-ops command's output into this folder")
    args = parser.parse_args()
    global LOG_DIR
    if args.keep_output:
        args.keep_output.mkdir(parents=True, exist_ok=True)
        LOG_DIR = args.keep_output
    reason = docker_unavailable()
    if reason:
        print(f"Docker cannot run here: {reason}", file=sys.stderr)
        return 2
    print(f"load at start {load()}, {os.cpu_count()} cores", flush=True)
    for part in args.parts.split(","):
        if part == "deploy":
            part_deploy(args.runs)
        elif part == "downtime":
            part_downtime(args.size_mb, args.runs)
        elif part == "build":
            part_build(args.runs)
        else:
            print(f"unknown part {part!r}: deploy, downtime or build", file=sys.stderr)
            return 2
    print(f"load at end {load()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
