"""A lazily imported client library is whole for every thread that first touches it at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# Threads released together read attributes of modules nobody imported yet, as verify's checks do.
CODE = """
import sys, threading
from ultra_ops.engine.lazy import lazy_module
psycopg, httpx, redis = lazy_module("psycopg"), lazy_module("httpx"), lazy_module("redis")
assert "psycopg.errors" not in sys.modules  # nothing executed before the first attribute read
start, errors = threading.Barrier(24), []
def touch(i):
    start.wait()
    try:
        (psycopg.Error, psycopg.errors.QueryCanceled, httpx.HTTPError, redis.RedisError, redis.retry.Retry)[i % 5]
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=touch, args=(i,)) for i in range(24)]
for t in threads: t.start()
for t in threads: t.join()
print(errors)
"""


def test_first_touch_from_many_threads_at_once() -> None:
    for _ in range(5):  # a fresh interpreter each time: only the first touch can race
        done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "[]\n", done.stdout


def test_a_missing_module_fails_when_named() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from ultra_ops.engine.lazy import lazy_module; lazy_module('no_such_module_x')"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "no module named 'no_such_module_x'" in done.stderr
