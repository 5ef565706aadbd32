"""Loading the code location against loading dagster alone.

Each import runs in a fresh interpreter (best of N, wall time of the whole process), so the ratio
is `import ultra_ops.definitions` / `import dagster`. Target: at most 1.6. Run from the repo root:
    .venv/bin/python bench/import_bench.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CASES = {
    "python -c pass": "pass",
    "import dagster": "import dagster",
    "import ultra_ops.definitions": "import ultra_ops.definitions",
}


def best_of(code: str, repeat: int) -> float:
    env = {**os.environ, "PGPORT": "1", "ULTRA_OPS_CONFIG": "/nonexistent.toml"}  # no service may be needed
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    best_of("import ultra_ops.definitions", 1)  # warm the bytecode caches
    results = {name: best_of(code, args.repeat) for name, code in CASES.items()}
    for name, seconds in results.items():
        print(f"{name:<32} {seconds * 1000:8.0f} ms (best of {args.repeat})")
    base = results["python -c pass"]
    ratio = results["import ultra_ops.definitions"] / results["import dagster"]
    net = (results["import ultra_ops.definitions"] - base) / (results["import dagster"] - base)
    print(
        f"ratio ultra_ops.definitions / dagster: {ratio:.2f} (target <= 1.6); without interpreter start-up: {net:.2f}"
    )


if __name__ == "__main__":
    main()
