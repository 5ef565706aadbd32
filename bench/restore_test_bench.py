"""Benchmark: the restore test against a bare pg_restore of the same dump into an empty database.

Not part of the tests. Run:  .venv/bin/python bench/restore_test_bench.py [--repeat 3] [--regenerate]

Generates (once; reused afterwards) the database `uo_bench_restore_test`, about 0.5 GB on disk in three
tables with primary keys and secondary indexes, takes one ultra-ops backup of it (the default
directory format, -j<cores> -Z1), then times, alternating, after a CHECKPOINT and sync each:
  T  ultra-ops restore_test(): create a scratch database, pg_restore -j<cores> into it, count the
     rows of every table and compare with the manifest's, drop the scratch database
  B  createdb + bare `pg_restore -j<cores>` of the same dump into it (dropped after, untimed)
  B1 the same with one job (pg_restore's default)
and prints the medians and T/B pair by pair (median of the pairs). Target: T/B <= 1.15.
The restore test runs in this process (its imports are done once, as in a Dagster step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The bench helpers (connections, CHECKPOINT + sync before each timing) are backup_bench's.
from backup_bench import CORES, PG, admin, checkpoint, db_size, drop_db  # noqa: E402

from ultra_ops.engine.backups.create import create_backup  # noqa: E402
from ultra_ops.engine.backups.dump import dump_source  # noqa: E402
from ultra_ops.engine.backups.trial_restore import restore_test  # noqa: E402
from ultra_ops.engine.settings import load_settings  # noqa: E402
from ultra_ops_tests.support.configs import checks_config  # noqa: E402

SOURCE_DB = "uo_bench_restore_test"
TARGET_BYTES = 450_000_000

WORDS = (
    "the model answer user prompt token context window request response latency deploy release version "
    "cache vector search embedding document chunk score rank filter query result error retry timeout "
    "stream chat assistant system tool call function json schema field value key index table"
).split()
_W = "(ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "])"
_PHRASE = " || ' ' || ".join([f"{_W}[1 + (random()*{len(WORDS) - 1})::int]"] * 8)

GENERATE = [
    "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, name text, created_at timestamptz)",
    "CREATE TABLE messages (id bigint PRIMARY KEY, user_id bigint NOT NULL, role text, content text, "
    "tokens int, created_at timestamptz)",
    "CREATE TABLE events (id bigint PRIMARY KEY, kind text, payload jsonb, created_at timestamptz)",
    """INSERT INTO users SELECT i, 'user' || i || '@example.com', md5(i::text), now() - random() * interval '900 days'
       FROM generate_series(1, 300000) i""",
    f"""INSERT INTO messages SELECT i, 1 + (random()*299999)::int, (ARRAY['user','assistant'])[1 + i % 2],
         {_PHRASE} || ' ' || {_PHRASE} || ' ref:' || md5(i::text), (random()*800)::int,
         now() - random() * interval '500 days'
       FROM generate_series(1, 1500000) i""",
    """INSERT INTO events SELECT i, (ARRAY['login','completion','error'])[1 + (random()*2)::int],
         jsonb_build_object('request_id', md5(i::text), 'latency_ms', (random()*3000)::int, 'ok', random() > 0.05),
         now() - random() * interval '500 days'
       FROM generate_series(1, 800000) i""",
    "CREATE INDEX messages_user ON messages (user_id)",
    "CREATE INDEX events_created ON events (created_at)",
    "VACUUM ANALYZE",
]


def generate(regenerate: bool) -> int:
    size = db_size(SOURCE_DB)
    if size is not None and size >= TARGET_BYTES and not regenerate:
        print(f"reusing {SOURCE_DB}: {size / 1e9:.2f} GB")
        return size
    drop_db(SOURCE_DB)
    with admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SOURCE_DB)))
    t0 = time.perf_counter()
    with admin(SOURCE_DB) as conn:
        for stmt in GENERATE:
            conn.execute(stmt)
    size = db_size(SOURCE_DB) or 0
    print(f"generated {SOURCE_DB}: {size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f}s")
    return size


def libpq() -> dict[str, str]:
    return {**os.environ, "PGHOST": PG["host"], "PGPORT": str(PG["port"]), "PGUSER": PG["user"]}


def bare_restore(fmt: str, source: str, jobs: int) -> float:
    target = "uo_bench_bare_restore"
    drop_db(target)
    checkpoint()
    t0 = time.perf_counter()
    subprocess.run(["createdb", "-T", "template0", target], check=True, env=libpq(), timeout=600)
    subprocess.run(["pg_restore", fmt, "-j", str(jobs), "-d", target, source], check=True, env=libpq(), timeout=3600)
    elapsed = time.perf_counter() - t0
    drop_db(target)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args()
    size = generate(args.regenerate)
    work = Path(tempfile.mkdtemp(prefix="uo_bench_rt_", dir=os.environ.get("BENCH_DIR", "/tmp")))
    config = checks_config(work, SOURCE_DB, "")
    env = load_settings(config).environment("staging")
    info = create_backup(env)
    fmt, source = dump_source(info)
    print(
        f"backup {info.id}: {info.size_bytes / 1e6:.0f} MB, {len(info.tables or {})} tables, "
        f"{sum((info.tables or {}).values())} rows"
    )
    times: dict[str, list[float]] = {
        "T restore test": [],
        "T of which pg_restore": [],
        "B bare pg_restore -j": [],
        "B1 bare pg_restore": [],
    }
    try:
        for _ in range(args.repeat):
            checkpoint()
            report = restore_test(env, info)
            assert report.passed, report.summary()
            times["T restore test"].append(report.duration_s)
            times["T of which pg_restore"].append(report.restore_s)
            times["B bare pg_restore -j"].append(bare_restore(fmt, source, CORES))
            times["B1 bare pg_restore"].append(bare_restore(fmt, source, 1))
    finally:
        drop_db("uo_bench_bare_restore")
        subprocess.run(["rm", "-rf", str(work)], check=False, timeout=600)
    print(f"\nsource database {SOURCE_DB}: {size / 1e9:.2f} GB on disk, {CORES} cores, {args.repeat} runs each\n")
    for name, values in times.items():
        print(f"{name:<24} median {statistics.median(values):6.2f} s  runs {', '.join(f'{v:.2f}' for v in values)}")
    pairs = [t / b for t, b in zip(times["T restore test"], times["B bare pg_restore -j"], strict=True)]
    single = [t / b for t, b in zip(times["T restore test"], times["B1 bare pg_restore"], strict=True)]
    print(
        f"\nrestore test / bare pg_restore -j{CORES}: {statistics.median(pairs):.2f} "
        f"(pairs {', '.join(f'{p:.2f}' for p in pairs)}); target <= 1.15"
    )
    print(
        f"restore test / bare one-job pg_restore: {statistics.median(single):.2f} "
        f"(pairs {', '.join(f'{p:.2f}' for p in single)})"
    )


if __name__ == "__main__":
    main()
