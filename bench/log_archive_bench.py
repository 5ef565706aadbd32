"""Archiving a day's logs (ultra_ops's archiver) against `tar -czf` of the same files, in the same run.

Generates about `--size-mb` MiB of text logs (several services' files, request ids, timings, stack
traces now and then: gzip -6 shrinks them about 4-5x, as it does real application logs) in a temp
folder, once. Each repeat, each side going first in turn:
- `tar -czf` of the files (GNU tar piping to gzip -6, one core for the compression);
- `archive_logs()` of an environment whose log folder holds hard links to the same files: the parallel
  gzip writer, fsync, the read-back (every member inflated, every file's size and sha256 compared),
  the rename and the removal of the originals (the links); once per compressor installed
  (libdeflate, the default when the `deflate` package is there, and the standard library's zlib).
Both read the files from the page cache (the generator just wrote them). Printed: wall times, CPU
seconds (tar's include gzip's), sizes and the per-run ratios; target: wall ratio at most 0.60. The CPU
ratio is what the wall ratio tends to when other sessions keep both cores busy (the scheduler then
gives each session the same share, however many threads it runs).

    .venv/bin/python bench/log_archive_bench.py [--size-mb 1024] [--repeat 3] [--dir /tmp] [--codecs zlib]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/log_archive_bench.py`
from ultra_ops.engine.maintenance.logs import archive_logs
from ultra_ops.engine.maintenance.targz import CODECS, LEVEL, codec, workers
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import checks_config

DAY = date(2026, 11, 26)
SERVICES = {"backend": 0.45, "worker": 0.25, "scheduler": 0.05, "access": 0.2, "llm-gateway": 0.05}
WORDS = (
    "user conversation message prompt token model cache database query request response session "
    "retry timeout upstream provider stream chunk embedding index batch queue job latency status "
    "created updated deleted started finished failed accepted rejected"
).split()
PATHS = [
    "/api/v1/prompts",
    "/api/v1/conversations",
    "/api/v1/messages",
    "/api/v1/users/me",
    "/health",
    "/api/v1/completions",
    "/api/v1/embeddings",
    "/api/v1/search",
]
TRACE = (
    'Traceback (most recent call last):\n  File "/app/ultra/api/handlers.py", line 212, in handle\n'
    '    result = await self.service.complete(request)\n  File "/app/ultra/llm/client.py", line 88, in '
    "complete\n    raise UpstreamTimeout(provider)\nultra.llm.errors.UpstreamTimeout: provider timed out\n"
)


def _bodies(rng: random.Random, service: str, n: int) -> list[str]:
    out = []
    for _ in range(n):
        level = rng.choices(["INFO", "DEBUG", "WARNING", "ERROR"], [70, 20, 8, 2])[0]
        rid = f"{rng.getrandbits(64):016x}"
        if service == "access":
            body = (
                f'127.0.0.1 - - "{rng.choice(["GET", "GET", "POST", "DELETE"])} {rng.choice(PATHS)}'
                f'/{rng.randint(1, 99999)} HTTP/1.1" {rng.choice([200, 200, 200, 201, 304, 404, 500])} '
                f'{rng.randint(80, 40000)} "-" "ultra-web/2.{rng.randint(0, 9)}" rid={rid} '
                f"rt={rng.random():.3f}"
            )
        else:
            words = " ".join(rng.choices(WORDS, k=rng.randint(3, 10)))
            body = (
                f"{level:<7} [{service}] ultra.{rng.choice(WORDS)}.{rng.choice(WORDS)} request_id={rid} "
                f"user_id={rng.randint(1, 50000)} {words} took={rng.random() * 500:.1f}ms"
            )
            if level == "ERROR" and rng.random() < 0.3:
                body += "\n" + TRACE.rstrip("\n")
        out.append(body + "\n")
    return out


def generate(folder: Path, size_mb: int) -> list[Path]:
    """Text logs of a day, one file per service, about `size_mb` MB in all."""
    rng = random.Random(7)
    paths = []
    for service, share in SERVICES.items():
        path = folder / f"{service}.log.{DAY:%Y%m%d}"
        target = int(size_mb * share * 2**20)
        bodies = _bodies(rng, service, 100_000)  # more than a deflate window's worth: no free repeats
        written, t = 0, 0.0
        with open(path, "w") as f:
            while written < target:
                lines = []
                for body in rng.choices(bodies, k=20_000):
                    t += rng.random() * 0.02
                    s = int(t)
                    lines.append(
                        f"2026-11-26T{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}."
                        f"{int(t * 1000) % 1000:03d}Z {body}"
                    )
                block = "".join(lines)
                f.write(block)
                written += len(block)
        paths.append(path)
    return paths


def _cpu(children: bool) -> float:
    t = os.times()
    return t.children_user + t.children_system if children else t.user + t.system


def run_tar(files: list[Path], out: Path) -> tuple[float, float, int]:
    cpu = _cpu(children=True)
    start = time.perf_counter()
    subprocess.run(
        ["tar", "-czf", str(out), "-C", str(files[0].parent), *(p.name for p in files)], check=True, timeout=3600
    )
    elapsed = time.perf_counter() - start
    return elapsed, _cpu(children=True) - cpu, out.stat().st_size


def run_ours(env, files: list[Path], codec: str) -> tuple[float, float, int]:  # noqa: ANN001
    """Wall seconds, CPU seconds and archive size of archive_logs() over links to `files`."""
    env.log_dir.mkdir(parents=True, exist_ok=True)
    for p in files:
        os.link(p, env.log_dir / p.name)
    cpu = _cpu(children=False)
    start = time.perf_counter()
    report = archive_logs(env, DAY, codec=codec)
    elapsed = time.perf_counter() - start
    cpu = _cpu(children=False) - cpu
    assert len(report.files) == len(files) and not list(env.log_dir.glob("*.log.*")), "originals not all archived"
    size = Path(report.archive).stat().st_size
    Path(report.archive).unlink()
    return elapsed, cpu, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument(
        "--codecs",
        default=",".join(c for c in CODECS if _available(c)),
        help="ultra_ops's compressors to measure (default: every one installed)",
    )
    args = parser.parse_args()
    codecs = args.codecs.split(",")
    root = Path(tempfile.mkdtemp(prefix="uo_log_bench_", dir=args.dir))
    try:
        pristine = root / "pristine"
        pristine.mkdir()
        start = time.perf_counter()
        files = generate(pristine, args.size_mb)
        total = sum(p.stat().st_size for p in files)
        os.sync()  # the generator's write-back is not either side's cost
        print(f"generated {len(files)} files, {total / 1e6:.0f} MB in {time.perf_counter() - start:.1f} s", flush=True)
        env = load_settings(checks_config(root, "unused", "", environment="development")).environment("development")
        print(
            f"ultra_ops: parallel gzip members at level {LEVEL}, {workers()} threads, codecs {', '.join(codecs)} "
            "(pigz is not used)"
        )
        sides = ["tar", *codecs]
        runs: dict[str, list[tuple[float, float, int]]] = {side: [] for side in sides}
        tar_out = root / "tar.tar.gz"
        for i in range(args.repeat):
            order = sides[i % len(sides) :] + sides[: i % len(sides)]  # each side goes first in turn
            for side in order:
                os.sync()
                if side == "tar":
                    runs["tar"].append(run_tar(files, tar_out))
                    tar_out.unlink()
                else:
                    runs[side].append(run_ours(env, files, side))
            t_tar, c_tar, s_tar = runs["tar"][-1]
            print(
                f"run {i + 1} (load {os.getloadavg()[0]:.1f}): tar -czf {t_tar:6.2f} s, CPU {c_tar:5.1f} s, "
                f"{s_tar / 1e6:.0f} MB",
                flush=True,
            )
            for codec in codecs:
                t, c, size = runs[codec][-1]
                print(
                    f"    ultra_ops {codec:<10} {t:6.2f} s, CPU {c:5.1f} s, {size / 1e6:.0f} MB   "
                    f"ratio {t / t_tar:.2f}, CPU ratio {c / c_tar:.2f}",
                    flush=True,
                )
        t_tar = statistics.median(r[0] for r in runs["tar"])
        print(f"median tar -czf {t_tar:.2f} s")
        for codec in codecs:
            ratios = [r[0] / t[0] for r, t in zip(runs[codec], runs["tar"], strict=True)]
            cpu = [r[1] / t[1] for r, t in zip(runs[codec], runs["tar"], strict=True)]
            t = statistics.median(r[0] for r in runs[codec])
            print(
                f"ultra_ops {codec}: median {t:.2f} s ({total / t / 1e6:.0f} MB/s), "
                f"ratio {statistics.median(ratios):.2f} (target <= 0.60), CPU ratio {statistics.median(cpu):.2f}, "
                f"archive {runs[codec][-1][2] / runs['tar'][-1][2]:.3f}x tar's size"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _available(name: str) -> bool:
    try:
        codec(name)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
