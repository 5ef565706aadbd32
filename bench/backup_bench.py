"""Benchmark: ultra_ops backup/restore against plain pg_dump/pg_restore on a >= 1 GB database.

Not part of the tests. Run:  .venv/bin/python bench/backup_bench.py [--regenerate] [--repeat N]

Generates (once; reused while it is big enough) the database `uo_bench_backup` with four tables of
mixed text/int/json rows, then times on the same machine in the same run:
  A  pg_dump -Fc (defaults)                      single job, gzip default level
  B  ultra-ops create_backup(format="custom")    -Fc -Z<compression>, + checksums + files archive
  C  ultra-ops create_backup() default           -Fd -j<cores> -Z1, + checksums + files archive
  D  pg_dump -Fd -j<cores> -Z0                   the floor: no compression, no checksums
  R1 ultra-ops restore_backup(C)                 verify + pg_restore -j + swap (+ safety backup variant)
  R2 pg_restore (one job) of A into a fresh database
Every ultra-ops operation runs in its own `python -c` subprocess that reports its peak RSS.
Bench databases and dump folders are removed at the end; the source database is kept.
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
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the support package, run as python bench/x.py

from ultra_ops_tests.support.configs import checks_config  # noqa: E402
from ultra_ops_tests.support.services import PG  # noqa: E402

SOURCE_DB = "uo_bench_backup"
TARGET_BYTES = 1_100_000_000  # a little over 1 GB so the figures are not dominated by fixed costs
CORES = os.cpu_count() or 1
PY = sys.executable

# Words for prose-like text: compresses roughly like chat messages do (3-4x with gzip), not like
# one repeated string (100x) or random bytes (1x).
WORDS = (
    "the model answer user prompt token context window request response latency deploy release "
    "version cache vector search embedding document chunk score rank filter query result error "
    "retry timeout stream chat assistant system tool call function json schema field value key "
    "index table column row batch queue worker job task status pending done failed running"
).split()

GENERATE = [
    "DROP TABLE IF EXISTS users, conversations, messages, events",
    "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, name text, plan text, "
    "created_at timestamptz, settings jsonb)",
    "CREATE TABLE conversations (id bigint PRIMARY KEY, user_id bigint, title text, model text, "
    "tokens int, created_at timestamptz)",
    "CREATE TABLE messages (id bigint PRIMARY KEY, conversation_id bigint, role text, content text, "
    "tokens int, created_at timestamptz)",
    "CREATE TABLE events (id bigint PRIMARY KEY, kind text, user_id bigint, payload jsonb, created_at timestamptz)",
    # Random words are drawn per row from a temp array; md5 adds incompressible identifiers.
    """INSERT INTO users SELECT i, 'user' || i || '@' || (ARRAY['example.com','mail.org','corp.io'])[1 + i % 3],
         initcap(md5(i::text)), (ARRAY['free','pro','team','enterprise'])[1 + (random()*3)::int],
         now() - random() * interval '900 days',
         jsonb_build_object('theme', (ARRAY['dark','light'])[1 + i % 2], 'lang', 'en',
                            'seed', md5(random()::text), 'limit', (random()*1000)::int)
       FROM generate_series(1, 400000) i""",
    """INSERT INTO conversations SELECT i, 1 + (random()*399999)::int,
         %(words)s[1 + (random()*53)::int] || ' ' || %(words)s[1 + (random()*53)::int] || ' ' || left(md5(i::text), 6),
         (ARRAY['ultra-large','ultra-small','ultra-code'])[1 + (random()*2)::int], (random()*20000)::int,
         now() - random() * interval '500 days'
       FROM generate_series(1, 1000000) i""",
    """INSERT INTO messages SELECT i, 1 + (random()*999999)::int, (ARRAY['user','assistant','system'])[1 + i % 3],
         (SELECT string_agg(%(words)s[1 + (random()*53)::int + g * 0], ' ') FROM generate_series(1, 20 + (i %% 60)) g)
           || ' ref:' || md5(i::text),
         (random()*800)::int, now() - random() * interval '500 days'
       FROM generate_series(1, %(messages)s) i""",
    """INSERT INTO events SELECT i, (ARRAY['login','completion','embedding','error','billing'])[1 + (random()*4)::int],
         1 + (random()*399999)::int,
         jsonb_build_object('request_id', md5(i::text), 'latency_ms', (random()*3000)::int,
                            'model', 'ultra-' || (random()*3)::int, 'ok', random() > 0.05,
                            'note', %(words)s[1 + (random()*53)::int] || ' ' || %(words)s[1 + (random()*53)::int]),
         now() - random() * interval '500 days'
       FROM generate_series(1, 1500000) i""",
    "VACUUM ANALYZE",
]


def admin(dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**PG, dbname=dbname, autocommit=True)


def db_size(name: str) -> int | None:
    with admin() as conn:
        row = conn.execute("SELECT pg_database_size(datname) FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row[0] if row else None


def generate(regenerate: bool) -> int:
    size = db_size(SOURCE_DB)
    if size is not None and size >= TARGET_BYTES and not regenerate:
        print(f"reusing {SOURCE_DB}: {size / 1e9:.2f} GB")
        return size
    with admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(SOURCE_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SOURCE_DB)))
    words = "(ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "])"
    t0 = time.perf_counter()
    with admin(SOURCE_DB) as conn:
        for stmt in GENERATE:
            text = stmt.replace("%(words)s", words).replace("%(messages)s", "1700000").replace("%%", "%")
            conn.execute(text)
    size = db_size(SOURCE_DB) or 0
    print(f"generated {SOURCE_DB}: {size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f}s")
    return size


def drop_db(name: str) -> None:
    with admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def checkpoint() -> None:
    # Each timing starts from a clean server and a clean page cache: no run pays for the dirty
    # pages (database or dump files) of the one before.
    with admin() as conn:
        conn.execute("CHECKPOINT")
    os.sync()


def timed(args: list[str], env: dict[str, str] | None = None) -> float:
    checkpoint()
    t0 = time.perf_counter()
    subprocess.run(args, check=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - t0


def libpq(dbname: str) -> dict[str, str]:
    return {"PGHOST": PG["host"], "PGPORT": str(PG["port"]), "PGUSER": PG["user"], "PGDATABASE": dbname}


def write_bench_config(work: Path, dbname: str, fmt: str) -> Path:
    env_file = work / "root" / ".env.staging"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("ULTRA_VERSION=v1.0.0\nAPI_TOKEN=bench-token-value\n")
    env_file.chmod(0o600)
    return checks_config(
        work, dbname, f'[environments.staging.backup]\nformat = "{fmt}"\n', name=f"ultra_ops_{fmt}.toml"
    )


CHILD = """
import json, resource, sys, time
from ultra_ops.engine.settings import load_settings
from ultra_ops.engine.backups import create, restore
env = load_settings(sys.argv[1]).environment("staging")
op = sys.argv[2]
t0 = time.perf_counter()
if op == "backup":
    level = int(sys.argv[3]) if len(sys.argv) > 3 else None
    info = create.create_backup(env, label="bench", compression=level)
    out = {"id": info.id, "size": info.size_bytes}
else:
    out = restore.restore_backup(env, sys.argv[3], safety_backup=sys.argv[4] == "1")
    out = {"id": out["backup_id"]}
out["seconds"] = time.perf_counter() - t0
out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def ultra(config: Path, *args: str) -> dict:
    checkpoint()
    t0 = time.perf_counter()
    proc = subprocess.run([PY, "-c", CHILD, str(config), *args], check=True, capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - t0  # includes interpreter start-up: what an operator waits
    return result


def dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", action="store_true", help="rebuild the source database")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing; the median is reported")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--skip-restore", action="store_true")
    args = parser.parse_args()
    size = generate(args.regenerate)
    if args.generate_only:
        return
    work = Path(tempfile.mkdtemp(prefix="uo_bench_", dir=os.environ.get("BENCH_DIR", "/tmp")))
    times: dict[str, list[float]] = {}
    rss: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    restore_db = "uo_bench_restore_target"
    plain_restore_db = "uo_bench_plain_restore"
    cfg_custom = write_bench_config(work, SOURCE_DB, "custom")
    cfg_default = write_bench_config(work, SOURCE_DB, "directory")
    cfg_restore = write_bench_config(work / "r", restore_db, "directory")
    try:
        last_default: Path | None = None
        for run in range(args.repeat):
            fc = work / f"plain_{run}.dump"
            times.setdefault("A pg_dump -Fc", []).append(timed(["pg_dump", "-Fc", "-f", str(fc)], libpq(SOURCE_DB)))
            sizes["A pg_dump -Fc"] = dir_size(fc)

            r = ultra(cfg_custom, "backup")
            times.setdefault("B ultra-ops custom", []).append(r["wall"])
            rss.setdefault("backup custom", []).append(r["maxrss_mb"])
            sizes["B ultra-ops custom"] = r["size"]

            r = ultra(cfg_default, "backup")
            times.setdefault("C ultra-ops default", []).append(r["wall"])
            rss.setdefault("backup default", []).append(r["maxrss_mb"])
            sizes["C ultra-ops default"] = r["size"]
            last_default = work / "backups" / "staging" / r["id"]

            floor = work / f"floor_{run}"
            times.setdefault("D pg_dump -Fd -j -Z0", []).append(
                timed(["pg_dump", "-Fd", "-j", str(CORES), "-Z0", "-f", str(floor)], libpq(SOURCE_DB))
            )
            sizes["D pg_dump -Fd -j -Z0"] = dir_size(floor)
            shutil.rmtree(floor)

            # Where the default's time goes: the same pg_dump without ultra-ops, and ultra-ops at -Z0.
            raw = work / f"raw_{run}"
            times.setdefault("E pg_dump -Fd -j -Z1 (C without ultra-ops)", []).append(
                timed(["pg_dump", "-Fd", "-j", str(CORES), "-Z1", "-f", str(raw)], libpq(SOURCE_DB))
            )
            shutil.rmtree(raw)
            r = ultra(cfg_default, "backup", "0")
            times.setdefault("F ultra-ops directory -Z0", []).append(r["wall"])
            sizes["F ultra-ops directory -Z0"] = r["size"]
            shutil.rmtree(work / "backups" / "staging" / r["id"])
            if run < args.repeat - 1:
                fc.unlink()
        if not args.skip_restore and last_default is not None:
            # The restore environment points at its own database and reads the default backup.
            rbackups = work / "r" / "backups" / "staging"
            rbackups.mkdir(parents=True, exist_ok=True)
            shutil.copytree(last_default, rbackups / last_default.name)
            with admin() as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(restore_db)))
            fc = work / f"plain_{args.repeat - 1}.dump"
            for _ in range(args.repeat):
                r = ultra(cfg_restore, "restore", last_default.name, "0")
                times.setdefault("R1 ultra-ops restore (no safety)", []).append(r["wall"])
                rss.setdefault("restore", []).append(r["maxrss_mb"])
                drop_db(plain_restore_db)
                with admin() as conn:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(plain_restore_db)))
                times.setdefault("R2 pg_restore -j1 of -Fc", []).append(
                    timed(["pg_restore", "-d", plain_restore_db, str(fc)], libpq(plain_restore_db))
                )
            # Once with the safety backup, to show what it costs on top.
            r = ultra(cfg_restore, "restore", last_default.name, "1")
            times.setdefault("R1s ultra-ops restore (with safety backup)", []).append(r["wall"])
            rss.setdefault("restore+safety", []).append(r["maxrss_mb"])
    finally:
        drop_db(restore_db)
        drop_db(plain_restore_db)
        with admin() as conn:
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", ("uo_bench_restore_target__%",)
            ).fetchall():
                drop_db(name)
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"\nsource database {SOURCE_DB}: {size / 1e9:.2f} GB on disk, {CORES} cores, "
        f"{args.repeat} runs each, median reported (all runs in brackets)"
    )
    for k, v in times.items():
        extra = f"  output {sizes[k] / 1e6:.0f} MB" if k in sizes else ""
        print(f"  {k:45s} {med[k]:7.1f}s  [{', '.join(f'{x:.1f}' for x in v)}]{extra}")
    print("peak RSS of the ultra-ops process (MB): " + ", ".join(f"{k} {max(v):.0f}" for k, v in rss.items()))

    def ratio(name: str, a: str, b: str, target: float) -> None:
        if a in med and b in med:
            value = med[a] / med[b]
            verdict = "ok" if value <= target else "MISSED"
            print(f"  {name:40s} {value:5.2f}  ({med[a]:.1f}s / {med[b]:.1f}s, target <= {target}) {verdict}")

    print("ratios:")
    ratio("custom vs pg_dump -Fc", "B ultra-ops custom", "A pg_dump -Fc", 1.05)
    ratio("default vs pg_dump -Fc", "C ultra-ops default", "A pg_dump -Fc", 0.40)
    ratio("default vs floor (-Fd -j -Z0)", "C ultra-ops default", "D pg_dump -Fd -j -Z0", 1.15)
    ratio(
        "ultra-ops overhead: C vs raw pg_dump C",
        "C ultra-ops default",
        "E pg_dump -Fd -j -Z1 (C without ultra-ops)",
        1.15,
    )
    ratio("directory -Z0 vs floor", "F ultra-ops directory -Z0", "D pg_dump -Fd -j -Z0", 1.15)
    ratio("restore vs pg_restore -j1", "R1 ultra-ops restore (no safety)", "R2 pg_restore -j1 of -Fc", 0.80)


if __name__ == "__main__":
    main()
