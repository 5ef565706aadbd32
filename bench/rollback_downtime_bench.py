"""Benchmark: how long the service is unavailable during a rollback, today's order against the old one.

Not part of the tests. Run:  .venv/bin/python bench/rollback_downtime_bench.py --size-mb 100 [--repeat 2]

Builds a fresh database of about --size-mb MB (the sample service's schema plus one bulk table with
a primary key) for one process-runtime environment running the sample Ultra AI service on a free
port, takes a backup of it, then rolls back to that backup in both orders, alternately, while a
separate poller process requests /health every 50 ms:
  new  rollback(): safety backup + pg_restore into a scratch database while the service serves,
       then stop, swap (renames + state files), start
  old  the order before: stop, restore_backup (safety backup, pg_restore into scratch, swap), start
The figure is the longest time between two successful /health answers (the 50 ms poll interval is
the floor), next to the service's own start time (stop, then up + healthy) measured in the same run.
Both rollbacks run the same engine code in this process (no Dagster run around them). The database,
its backups and the temp folder are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ultra_ops.engine.backups.create import create_backup  # noqa: E402
from ultra_ops.engine.backups.restore import SAFETY_LABEL, restore_backup  # noqa: E402
from ultra_ops.engine.backups.store import list_backups  # noqa: E402
from ultra_ops.engine.envfile import update_env_file  # noqa: E402
from ultra_ops.engine.release.migrate import apply_migrations  # noqa: E402
from ultra_ops.engine.release.rollback import rollback  # noqa: E402
from ultra_ops.engine.runtimes import get_runtime  # noqa: E402
from ultra_ops.engine.settings import load_settings  # noqa: E402
from ultra_ops_tests.support.configs import write_config  # noqa: E402
from ultra_ops_tests.support.databases import admin, drop_databases  # noqa: E402
from ultra_ops_tests.support.ports import free_port  # noqa: E402
from ultra_ops_tests.support.services import PG  # noqa: E402

ROW_BYTES = 250  # bigint + ~200 bytes of text + tuple overhead, as stored

POLLER = r"""
import json, sys, threading, time, urllib.request
url, stop = sys.argv[1], threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
last_ok, max_gap, failures, requests = None, 0.0, 0, 0
while not stop.is_set():
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            ok = r.status == 200
    except Exception:
        ok = False
    requests += 1
    now = time.monotonic()
    if ok:
        if last_ok is not None:
            max_gap = max(max_gap, now - last_ok)
        else:
            print("ready", flush=True)  # Poller.wait_ready: a gap can be measured from here on
        last_ok = now
    else:
        failures += 1
    time.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))
print(json.dumps({"max_gap_s": max_gap, "failures": failures, "requests": requests}))
"""


class PrintLog:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def info(self, msg: str) -> None:
        if not self.quiet:
            print(f"    {datetime.now():%H:%M:%S.%f}"[:-3] + f" {msg}", flush=True)

    def warning(self, msg: str) -> None:
        print(f"    ! {msg}", flush=True)


def fill_bulk(conn: psycopg.Connection, size_mb: int) -> float:
    """A `bulk` table of about size_mb MB in conn's database (autocommit); the database's size in MB."""
    rows = max(1000, size_mb * 1_000_000 // ROW_BYTES)
    conn.execute("CREATE TABLE bulk (id bigint PRIMARY KEY, body text NOT NULL)")
    step = 500_000
    for lo in range(1, rows + 1, step):
        conn.execute(
            "INSERT INTO bulk SELECT i, repeat(md5(i::text), 3) || md5(random()::text) || "
            "repeat(md5((i * 7)::text), 2) FROM generate_series(%s::bigint, %s::bigint) i",
            (lo, min(rows, lo + step - 1)),
        )
    conn.execute("VACUUM ANALYZE bulk")
    conn.execute("CHECKPOINT")
    return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 1e6


def generate(env, size_mb: int) -> float:  # noqa: ANN001
    with psycopg.connect(**PG, dbname=env.database.name, autocommit=True) as conn:
        return fill_bulk(conn, size_mb)


class Poller:
    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", POLLER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def wait_ready(self, timeout_s: float = 30) -> None:
        """Until the poller has had its first answer: before that, an outage would not show as a gap
        (its start-up is slow under load)."""
        assert self.proc.stdout is not None
        ready = threading.Event()
        reader = threading.Thread(target=lambda: (self.proc.stdout.readline(), ready.set()), daemon=True)
        reader.start()
        if not ready.wait(timeout_s):
            raise RuntimeError(f"the poller had no answer in {timeout_s}s")
        reader.join()

    def stop(self) -> dict:
        out, _ = self.proc.communicate("", timeout=30)
        return json.loads(out.strip().splitlines()[-1])


def start_time(env) -> float:  # noqa: ANN001
    runtime = get_runtime(env)
    runtime.down()
    t0 = time.perf_counter()
    runtime.up("v1.0.0")
    runtime.wait_healthy(env.health_timeout_s)
    return time.perf_counter() - t0


def old_order(env, backup_id: str, log) -> None:  # noqa: ANN001
    runtime = get_runtime(env, log=log)
    runtime.down()
    restore_backup(env, backup_id, log=log)
    runtime.up("v1.0.0")
    runtime.wait_healthy(env.health_timeout_s)


def new_order(env, backup_id: str, log) -> None:  # noqa: ANN001
    rollback(env, backup_id, log=log, verify=False)


def drop_safety_backups(env) -> None:  # noqa: ANN001
    for b in list_backups(env):
        if b.label.startswith(SAFETY_LABEL):
            shutil.rmtree(b.path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100, help="database size to generate (default 100)")
    parser.add_argument("--repeat", type=int, default=1, help="rollbacks per order (default 1)")
    parser.add_argument("--orders", default="new,old", help="which orders to run (default new,old)")
    parser.add_argument("--verbose", action="store_true", help="print the engine's log lines")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="uo-rollback-bench-"))
    dbname = f"uo_bench_rollback_{os.getpid()}"
    port = free_port()
    log = PrintLog(quiet=not args.verbose)
    drop_databases(dbname)
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    env = load_settings(write_config(work, dbname, port=port, health_timeout_s=60)).environment("staging")
    env.env_file.write_text("ULTRA_VERSION=v1.0.0\n")
    env.env_file.chmod(0o600)
    results: dict[str, list[dict]] = {"new": [], "old": []}
    try:
        apply_migrations(env, log=log)
        t0 = time.perf_counter()
        size = generate(env, args.size_mb)
        print(f"database {dbname}: {size:.0f} MB generated in {time.perf_counter() - t0:.1f}s", flush=True)
        backup = create_backup(env, version="v1.0.0", label="bench", log=log)
        print(f"backup {backup.id}: {backup.size_bytes / 1e6:.0f} MB", flush=True)
        update_env_file(env.env_file, {"ULTRA_VERSION": "v1.0.0"})
        starts = [start_time(env) for _ in range(2)]
        print(f"service start (up + healthy): {min(starts):.2f}s best of {len(starts)}", flush=True)
        chosen = [(o, {"new": new_order, "old": old_order}[o]) for o in args.orders.split(",")]
        for i in range(args.repeat):
            for order, fn in chosen if i % 2 == 0 else chosen[::-1]:
                with psycopg.connect(**PG, dbname=dbname, autocommit=True) as conn:
                    conn.execute("CHECKPOINT")
                poller = Poller(f"http://127.0.0.1:{port}/health")
                poller.wait_ready()
                time.sleep(0.5)  # a few answers before the rollback starts
                t0 = time.perf_counter()
                fn(env, backup.id, log)
                total = time.perf_counter() - t0
                time.sleep(0.5)
                polled = poller.stop()
                polled["total_s"] = total
                results[order].append(polled)
                print(
                    f"{order:>3} order: longest unavailability {polled['max_gap_s']:.2f}s, rollback "
                    f"{total:.1f}s, {polled['failures']} of {polled['requests']} requests failed",
                    flush=True,
                )
                drop_safety_backups(env)
        print()
        print("| size | order | longest unavailability | rollback time | service start |")
        print("|---|---|---|---|---|")
        for order in (o for o, _ in chosen):
            gaps = [r["max_gap_s"] for r in results[order]]
            totals = [r["total_s"] for r in results[order]]
            print(
                f"| {size:.0f} MB | {order} | {statistics.median(gaps):.2f} s {[round(g, 2) for g in gaps]} | "
                f"{statistics.median(totals):.1f} s | {min(starts):.2f} s |"
            )
    finally:
        try:
            get_runtime(env).down()
        finally:
            drop_databases(dbname)
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
