"""A lock of this machine for the tests: what the Docker engine holds (images, seed volumes) is
shared by every test process here (the xdist workers start at once, other checkouts use the same
engine), so the one that makes such a thing holds this while the others wait, then find it made."""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """An exclusive flock on /tmp/ultra-ops-tests-NAME.lock (the kernel drops it with its holder)."""
    path = Path(tempfile.gettempdir()) / f"ultra-ops-tests-{name}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
