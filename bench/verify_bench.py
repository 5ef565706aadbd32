"""Benchmark: does verify_environment run its checks concurrently, and what does that cost?

A threaded HTTP server on loopback (in its own process by default, as a real service would be, so
it does not compete with the checks for this interpreter's GIL) serves 40 endpoints that each
answer after 200 ms. The environment verifies those 40 endpoints plus its database (always checked;
here `SELECT 1` against the local `postgres` database) and, unless --no-redis, the local Redis.

Printed: the median of 5 runs (and the best) of verify_environment's wall time divided by its
slowest check's latency (ideal 1.0, target <= 1.25; serial would be ~40), and the same ratio for
a serial loop of the same 40 requests with one httpx client.

    .venv/bin/python bench/verify_bench.py [--runs 5] [--in-process] [--no-redis]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the support package, run as python bench/x.py

from ultra_ops.engine.settings import load_settings  # noqa: E402
from ultra_ops.engine.verify.runner import verify_environment  # noqa: E402
from ultra_ops_tests.support.configs import checks_config  # noqa: E402
from ultra_ops_tests.support.services import REDIS_URL  # noqa: E402

ENDPOINTS = 40
DELAY_S = 0.2


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real API server would offer
    # Headers and body go out as separate writes; with Nagle on, the body waits for the client's
    # delayed ACK (40 ms on Linux) and every request would measure that instead of the service.
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        time.sleep(DELAY_S)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 would make 35 of 40 simultaneous connects wait for a SYN retry.
    request_queue_size = 128


def serve(port: int) -> None:
    with _Server(("127.0.0.1", port), _Handler) as httpd:
        httpd.serve_forever()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"benchmark server did not listen on {port}")


def _config(folder: Path, port: int, with_redis: bool) -> Path:
    endpoints = "".join(
        f'[[environments.staging.verify.endpoints]]\nname = "e{i:02d}"\nurl = "http://127.0.0.1:{port}/e{i:02d}"\n\n'
        for i in range(ENDPOINTS)
    )
    redis_table = f'[environments.staging.redis]\nurl = "{REDIS_URL}"\n' if with_redis else ""
    verify = "[environments.staging.verify]\ntimeout_s = 5\nretries = 0\n\n"
    return checks_config(folder, "postgres", redis_table + verify + endpoints)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--in-process", action="store_true", help="serve from a thread of this process")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    port = _free_port()
    server: subprocess.Popen[bytes] | None = None
    if args.in_process:
        threading.Thread(target=serve, args=(port,), daemon=True).start()
    else:
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        _wait_listening(port)
        with tempfile.TemporaryDirectory() as tmp:
            env = load_settings(_config(Path(tmp), port, not args.no_redis)).environment("staging")
            verify_environment(env)  # warm-up: imports, first connections to PostgreSQL and Redis
            totals, ratios = [], []
            for _ in range(args.runs):
                report = verify_environment(env)
                if not report.ok:
                    raise SystemExit(f"verification failed: {report.summary()}")
                slowest = max(r.latency_ms for r in report.results)
                totals.append(report.duration_ms)
                ratios.append(report.duration_ms / slowest)
            serial_totals, serial_ratios = [], []
            for _ in range(args.runs):
                with httpx.Client(timeout=5) as client:
                    latencies = []
                    start = time.perf_counter()
                    for ep in env.verify.endpoints:
                        t = time.perf_counter()
                        client.get(ep.url).raise_for_status()
                        latencies.append((time.perf_counter() - t) * 1000)
                    total = (time.perf_counter() - start) * 1000
                serial_totals.append(total)
                serial_ratios.append(total / max(latencies))
    finally:
        if server is not None:
            server.terminate()
            server.wait()

    checks = len(report.results)
    print(
        f"server: {'thread in this process' if args.in_process else 'separate process'}; "
        f"{ENDPOINTS} endpoints x {DELAY_S * 1000:.0f} ms; checks per verify: {checks} "
        f"({ENDPOINTS} endpoints + database{'' if args.no_redis else ' + redis'})"
    )
    print(
        f"verify_environment  median of {args.runs}: total {statistics.median(totals):.0f} ms, "
        f"total/slowest {statistics.median(ratios):.3f}  "
        f"(best {min(totals):.0f} ms, {min(ratios):.3f}; worst {max(totals):.0f} ms, {max(ratios):.3f})"
    )
    print(
        f"verify_environment  median overhead over the {DELAY_S * 1000:.0f} ms service time: "
        f"{statistics.median(totals) - DELAY_S * 1000:.0f} ms"
    )
    print(
        f"serial httpx loop   median of {args.runs}: total {statistics.median(serial_totals):.0f} ms, "
        f"total/slowest {statistics.median(serial_ratios):.2f}"
    )
    print(f"target total/slowest <= 1.25: {'met' if statistics.median(ratios) <= 1.25 else 'NOT met'}")


if __name__ == "__main__":
    main()
