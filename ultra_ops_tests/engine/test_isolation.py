"""What ultra_ops hands its child processes: bounded time, and only their own environment's variables."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ultra_ops.engine import shell
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.errors import CommandFailed, InputError
from ultra_ops.engine.locks import EnvironmentLock
from ultra_ops_tests.support.stack import Stack


class SilentServer:
    """A TCP server on loopback that accepts every connection and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(conn)
            self.accepted.set()

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


def test_backup_against_a_silent_database_fails_within_the_connect_timeout(
    tmp_path: Path, pg_database: str, dagster_home: Path, silent: SilentServer, capsys
) -> None:
    stack = Stack(tmp_path, pg_database)
    text = stack.config.read_text().replace("port = 5432", f"port = {silent.port}\nconnect_timeout_s = 2")
    stack.config.write_text(text)
    started = time.monotonic()
    assert stack.ops("backups", "create") == 1
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert silent.accepted.is_set()  # it did reach the silent server...
    assert elapsed < 30, elapsed  # ...and gave up on it (a hang is what this replaces)
    # The first client of the backup is the connection whose snapshot pg_dump would dump (row counts).
    assert "cannot open a snapshot" in err and "timeout expired" in err, err
    assert not stack.env.backups_path.exists() or not any(stack.env.backups_path.iterdir())


@pytest.mark.unit
def test_every_command_has_a_timeout_that_kills_its_whole_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (
        f"import os, subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
        f"'import time; time.sleep(60)']); open({str(pids)!r}, 'w').write(str(child.pid)); time.sleep(60)"
    )
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="did not finish within 1s"):
        shell.run([sys.executable, "-c", script], timeout=1)
    assert time.monotonic() - started < 10
    grandchild = int(pids.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{grandchild}").exists() and "Z" != _state(grandchild):
        assert time.monotonic() < deadline, "the command's own child outlived its timeout"
        time.sleep(0.05)


@pytest.mark.unit
def test_a_streamed_command_writes_on_while_the_sink_is_busy(tmp_path: Path) -> None:
    """The stream's pipe holds 1 MiB, not Linux's 64 KiB: a dump relayed by ssh is not stalled while
    this process is slow to read (a busy machine). The sink holds its first chunk until the child
    has written 768 KiB more and said so; with a 64 KiB pipe the child would block first."""
    done = tmp_path / "done"
    received = bytearray()

    def sink(chunk: bytes) -> None:
        if not received:
            deadline = time.monotonic() + 10
            while not done.exists():
                assert time.monotonic() < deadline, "the child stalled behind a sink that had not read yet"
                time.sleep(0.02)
        received.extend(chunk)

    script = f"head -c 4096 /dev/zero; sleep 0.2; head -c 786432 /dev/zero; touch {done}"
    proc = shell.stream(["sh", "-c", script], timeout=30, sink=sink)
    assert proc.returncode == 0
    assert len(received) == 4096 + 786432


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def test_children_get_the_basics_and_their_own_environment_only(
    tmp_path: Path, pg_database: str, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ULTRA_PROD_DB_PASSWORD", "prod-pass-NeverInStaging")
    monkeypatch.setenv("ULTRA_TEST_PROD_LLM_KEY", "sk-prod-NeverInStaging")
    monkeypatch.setenv("ULTRA_TEST_STAGING_DB_PASSWORD", "staging-own-pass")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    seen = tmp_path / "test_command_env.json"
    dump = f"import json, os; open({str(seen)!r}, 'w').write(json.dumps(dict(os.environ)))"
    stack = Stack(
        tmp_path, pg_database, extra=f'test_command = [{json.dumps(sys.executable)}, "-c", {json.dumps(dump)}]'
    )
    text = stack.config.read_text().replace(
        f'name = "{pg_database}"', f'name = "{pg_database}"\npassword_env = "ULTRA_TEST_STAGING_DB_PASSWORD"'
    )
    stack.config.write_text(text)
    stack.env.env_file.write_text("ULTRA_VERSION=\nULTRA_FEATURE_FLAGS=search\n")
    try:
        assert stack.ops("deploy", "--tag", "v1.0.0") == 0
        pid = json.loads((stack.env.state_dir / "run" / "backend.pid").read_text())["pid"]
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        service = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    finally:
        stack.stop()
    tests = json.loads(seen.read_text())
    for env in (service, tests):
        assert "ULTRA_PROD_DB_PASSWORD" not in env and "ULTRA_TEST_PROD_LLM_KEY" not in env
        assert "prod-pass-NeverInStaging" not in repr(env) and "sk-prod-NeverInStaging" not in repr(env)
        assert "DAGSTER_HOME" not in env  # nor anything else of ours outside the allowlist
        assert env["PATH"] == os.environ["PATH"] and env["LC_ALL"] == "C.UTF-8"
    assert tests["ULTRA_TEST_STAGING_DB_PASSWORD"] == "staging-own-pass"  # its own config names it
    # A service gets its password as the service's variable only, not under the name of ours.
    assert "ULTRA_TEST_STAGING_DB_PASSWORD" not in service
    assert service["PGPASSWORD"] == "staging-own-pass"
    assert service["ULTRA_FEATURE_FLAGS"] == "search" and tests["ULTRA_FEATURE_FLAGS"] == "search"  # its env file
    assert service["ULTRA_VERSION"] == "v1.0.0" and tests["ULTRA_VERSION"] == "v1.0.0"


@pytest.mark.unit
def test_child_env_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-anything")
    monkeypatch.setenv("HOME", "/home/op")
    env = shell.child_env(None, {"X": "1"}, names=["HOME"])
    assert "OPENAI_API_KEY" not in env and env["HOME"] == "/home/op" and env["X"] == "1"


def test_rollback_against_a_silent_database_fails_within_the_connect_timeout(
    tmp_path: Path, pg_database: str, dagster_home: Path, silent: SilentServer, capsys
) -> None:
    stack = Stack(tmp_path, pg_database)
    assert stack.ops("backups", "create") == 0
    [backup] = list_backups(stack.env)
    text = stack.config.read_text().replace("port = 5432", f"port = {silent.port}\nconnect_timeout_s = 2")
    stack.config.write_text(text)
    capsys.readouterr()
    started = time.monotonic()
    assert stack.ops("rollback", "--backup", backup.id, "--yes") == 1
    assert time.monotonic() - started < 45
    err = capsys.readouterr().err
    assert silent.accepted.is_set() and "timeout expired" in err, err


def test_an_infinite_lock_wait_is_refused(tmp_path: Path, pg_database: str) -> None:
    stack = Stack(tmp_path, pg_database)
    with pytest.raises(InputError, match="finite"):
        EnvironmentLock(stack.env, operation="deploy").acquire(wait_s=float("inf"))
