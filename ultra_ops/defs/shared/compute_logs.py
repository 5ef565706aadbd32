"""Step output capture without helper processes.

Dagster's LocalComputeLogManager sends a run's stdout and stderr to files (the UI's stdout/stderr
tabs) and copies them back to the terminal with a `tail -F` process per stream, each watched by a
second Python interpreter that kills it if the run dies: four processes started and stopped per
run, about 0.1 s of a CLI run on a busy machine. This manager stores the same files in the same
place (the UI reads them as before) and copies them to the terminal from a thread of the run's
process instead; at the end it copies what is left before returning, where `tail` could be
stopped before the last lines (dagster-io/dagster#23336).

`LocalComputeLogManager`, `get_captured_local_path`, `complete_artifact_path` and
`CapturedLogContext` are Dagster APIs outside its documented surface; ultra_ops_tests/
test_compute_logs.py fails when they move.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._serdes import ConfigurableClassData

_POLL_S = 0.05  # how late a line can reach the terminal


class InProcessComputeLogManager(LocalComputeLogManager):
    """LocalComputeLogManager whose capture copies output to the terminal from a thread."""

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,
                          config_value: Any) -> InProcessComputeLogManager:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Iterator[CapturedLogContext]:
        out = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        err = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        with _mirrored(sys.stdout, out), _mirrored(sys.stderr, err):
            yield CapturedLogContext(log_key)
        # Dagster's marker that the capture is complete
        with open(self.complete_artifact_path(log_key), "a"):
            pass


class _Follower(threading.Thread):
    """`tail -F -c +0 path` for one capture: copies what the file gains to `fd` until stopped,
    then the rest."""

    def __init__(self, path: str, fd: int) -> None:
        super().__init__(name="ultra_ops-log-mirror", daemon=True)
        self._path = path
        self._fd = fd
        self._done = threading.Event()

    def run(self) -> None:
        with open(self._path, "rb") as f:
            while True:
                stopping = self._done.is_set()
                while chunk := f.read(65536):
                    try:
                        _write_all(self._fd, chunk)
                    except OSError:  # the terminal went away; the file keeps everything
                        return
                if stopping:
                    return
                self._done.wait(_POLL_S)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fileno(stream: IO[str]) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):
        return None  # a test runner's stand-in stream: nothing to redirect, as in Dagster
    return fd if isinstance(fd, int) else None


@contextmanager
def _mirrored(stream: IO[str], path: str) -> Iterator[None]:
    """Send the file descriptor under `stream` (and so any subprocess's output) to `path` and copy
    it to where it went before."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "ab") as capture:
        fd = _fileno(stream)
        if fd is None:
            yield
            return
        stream.flush()
        terminal = os.dup(fd)
        follower = _Follower(path, terminal)
        follower.start()
        try:
            os.dup2(capture.fileno(), fd)
            try:
                yield
            finally:
                stream.flush()
                os.dup2(terminal, fd)
        finally:
            follower.stop()
            os.close(terminal)
