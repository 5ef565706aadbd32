"""Benchmark: what the verification window costs, on the real sample service.

The sample service (with PostgreSQL, Redis and the LLM stand-in, each service in its own process)
is verified as the shipped staging config does it: health, database, Redis, the LLM provider, two
API endpoints, the six smoke steps, and performance verification (2 endpoints x 50 requests at
concurrency 5, /proc readings, disk, database, one completion).

1. CPU time of ultra_ops per sample against the requests it sends: this process's CPU time for one
   sample (verify_environment), divided by the CPU time a plain httpx loop in the same process
   spends sending the same number of requests (counted on the service's /metrics) to the service.
2. The latency it adds to the service under test: a load generator in its own process calls
   /api/v1/prompts 20 times a second for --seconds, once alone and once while ultra_ops runs a
   window with a sample every --interval seconds (denser than production's 30 s: an upper bound);
   p50 and p95 with the window divided by p50 and p95 without.

    .venv/bin/python bench/verify_window_bench.py [--samples 5] [--seconds 20] [--interval 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the support package, run as python bench/x.py

from ultra_ops.engine.release.migrate import apply_migrations  # noqa: E402
from ultra_ops.engine.secrets import NullLog, Redactor  # noqa: E402
from ultra_ops.engine.settings import load_settings  # noqa: E402
from ultra_ops.engine.verify.runner import verify_environment  # noqa: E402
from ultra_ops.engine.verify.smoke import metric_value  # noqa: E402
from ultra_ops_tests.support.configs import checks_config  # noqa: E402
from ultra_ops_tests.support.ports import free_port  # noqa: E402
from ultra_ops_tests.support.services import PG, REDIS_URL  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DB = "uo_bench_window"

LOAD = """
import json, sys, time, httpx
url, seconds, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
out, start = [], time.monotonic()
with httpx.Client(timeout=10) as client:
    while time.monotonic() - start < seconds:
        t = time.perf_counter()
        client.get(url)
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(max(0.0, 1 / rate - (time.perf_counter() - t)))
print(json.dumps(out))
"""


def write_config(tmp: Path, port: int, llm: int) -> Path:
    """The staging environment's checks as the shipped config has them (its smoke sequences too),
    pointed at this benchmark's service and LLM stand-in."""
    shipped = (REPO / "ultra_ops.toml").read_text()
    smoke = shipped[
        shipped.index("[environments.staging.verify.smoke.release]") : shipped.index(
            "# Performance verification", shipped.index("[environments.staging.verify.smoke")
        )
    ]
    smoke = smoke.replace("8001", str(port))
    sections = f"""
[environments.staging.redis]
url = "{REDIS_URL}"
[[environments.staging.llm_providers]]
name = "stand-in"
models_url = "http://127.0.0.1:{llm}/v1/models"
auth = "none"
completion_url = "http://127.0.0.1:{llm}/v1/chat/completions"
[environments.staging.verify]
timeout_s = 5
retries = 0
health_urls = ["http://127.0.0.1:{port}/health?detail=true"]
endpoints = [
  {{ name = "prompts", url = "http://127.0.0.1:{port}/api/v1/prompts" }},
  {{ name = "version", url = "http://127.0.0.1:{port}/api/v1/version" }},
]
[environments.staging.verify.performance]
requests = 50
concurrency = 5
endpoints = [
  {{ name = "prompts", url = "http://127.0.0.1:{port}/api/v1/prompts" }},
  {{ name = "version", url = "http://127.0.0.1:{port}/api/v1/version" }},
]
llm_completion = true
{smoke}
"""
    return checks_config(
        tmp,
        DB,
        sections,
        environment_keys=f'migrations = "{REPO / "ultra_ops/sample_service/migrations"}"',
        database_keys='probe_queries = ["SELECT 1", "SELECT count(*) FROM prompts"]',
    )


def requests_served(base: str) -> float:
    return metric_value(httpx.get(base + "/metrics").text, "ultra_http_requests_total") or 0.0


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


def load(url: str, seconds: float) -> list[float]:
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, url, str(seconds), "20"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=5, help="samples timed for the CPU figure")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each latency run")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between window samples")
    args = parser.parse_args()
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    procs = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        port, llm = free_port(), free_port()
        config = write_config(tmp, port, llm)
        env = load_settings(config).environment("staging")
        apply_migrations(env)
        base = f"http://127.0.0.1:{port}"
        service_env = {
            **os.environ,
            "PORT": str(port),
            "PGHOST": PG["host"],
            "PGPORT": str(PG["port"]),
            "PGUSER": PG["user"],
            "PGDATABASE": DB,
            "REDIS_URL": REDIS_URL,
            "ULTRA_REDIS_PREFIX": "uo_bench_window:",
            "ULTRA_LLM_URL": f"http://127.0.0.1:{llm}/v1",
            "ULTRA_UPLOAD_DIR": str(tmp / "uploads"),
        }
        try:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ultra_ops.sample_service.llm_standin", "--port", str(llm)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ultra_ops.sample_service"],
                    env=service_env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(base + "/health", timeout=1)
                    httpx.get(f"http://127.0.0.1:{llm}/v1/models", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            verify_environment(env, redact=Redactor(), log=NullLog())  # warm-up: imports, TLS context, pools

            # 1. CPU per sample against a plain httpx loop sending as many requests.
            cpu, wall, sent = [], [], []
            for _ in range(args.samples):
                before = requests_served(base)
                c0, w0 = time.process_time(), time.perf_counter()
                report = verify_environment(env, redact=Redactor(), log=NullLog())
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
                sent.append(requests_served(base) - before - 1)  # minus the /metrics read itself
                assert report.ok, report.table()
            n = int(statistics.median(sent))
            with httpx.Client() as client:
                c0 = time.process_time()
                for _ in range(n):
                    client.get(base + "/api/v1/version")
                httpx_cpu = time.process_time() - c0
            per_sample = statistics.median(cpu)
            print(f"requests sent to the service per sample: {n} (+2 to the LLM stand-in)")
            print(
                f"ultra_ops CPU per sample: {per_sample * 1000:.0f} ms (wall {statistics.median(wall) * 1000:.0f} ms)"
                f"; all: {', '.join(f'{c * 1000:.0f}' for c in cpu)} ms"
            )
            print(f"plain httpx loop, {n} requests: {httpx_cpu * 1000:.0f} ms CPU")
            print(f"RATIO cpu per sample / httpx for the same requests: {per_sample / httpx_cpu:.2f}")

            # 2. Latency the window adds to the service under test.
            url = base + "/api/v1/prompts"
            alone = load(url, args.seconds)
            stop = threading.Event()

            def window() -> None:
                while not stop.is_set():
                    start = time.monotonic()
                    verify_environment(env, redact=Redactor(), log=NullLog())
                    stop.wait(max(0.0, args.interval - (time.monotonic() - start)))

            def replay() -> None:
                # The same requests as a sample, sent by plain httpx at the same concurrency: the
                # load a window puts on the service, without ultra_ops's own work.
                paths = ["/api/v1/prompts", "/api/v1/version"] * (n // 2)
                with httpx.Client(limits=httpx.Limits(max_connections=5)) as client:
                    while not stop.is_set():
                        start = time.monotonic()
                        chunks = [paths[i::5] for i in range(5)]
                        workers = [
                            threading.Thread(target=lambda c=c: [client.get(base + p) for p in c]) for c in chunks
                        ]
                        for w in workers:
                            w.start()
                        for w in workers:
                            w.join()
                        stop.wait(max(0.0, args.interval - (time.monotonic() - start)))

            figures = {}
            for name, target in (("window", window), ("replay", replay)):
                stop.clear()
                runner = threading.Thread(target=target, daemon=True)
                runner.start()
                figures[name] = percentiles(load(url, args.seconds))
                stop.set()
                runner.join()
            (p50a, p95a), (p50w, p95w), (p50r, p95r) = percentiles(alone), figures["window"], figures["replay"]
            print(f"service latency alone: p50 {p50a:.1f} ms, p95 {p95a:.1f} ms ({len(alone)} requests)")
            print(f"with a window sample every {args.interval:g} s: p50 {p50w:.1f} ms, p95 {p95w:.1f} ms")
            print(
                f"with the same requests from plain httpx every {args.interval:g} s: p50 {p50r:.1f} ms, "
                f"p95 {p95r:.1f} ms"
            )
            print(f"RATIO p50 with/without: {p50w / p50a:.2f}; p95 with/without: {p95w / p95a:.2f}")
            print(f"RATIO p50 window/plain replay: {p50w / p50r:.2f}; p95 window/plain replay: {p95w / p95r:.2f}")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
            with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
