"""The commands that run an environment's dump tools on its host: the password only ever on the
tool's stdin, never in an argument list, and the rest of stdin handed to the tool whole."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ultra_ops.engine.backups.hosted import _IN_CONTAINER, _ON_HOST, NO_CONTAINER_EXIT, SNAPSHOT_ARG, HostedDatabase
from ultra_ops.engine.errors import BackupError
from ultra_ops.engine.files import start_writeback
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment, load_settings

pytestmark = pytest.mark.unit

PASSWORD = "pg-Pa55 word;$(not-run)"


def _env(tmp_path: Path, password: str = PASSWORD) -> Environment:
    root = tmp_path / "root"
    root.mkdir()
    (root / "compose.yml").write_text('version: "3.8"\nservices: {}\n')
    (root / ".env.staging").write_text(f"POSTGRES_PASSWORD={password}\n")
    config = tmp_path / "ultra_ops.toml"
    config.write_text(f"""
[environments.staging]
runtime = "compose"
root = "{root}"
compose_file = "compose.yml"
compose_project = "shop-staging"
state_dir = "{tmp_path / "state"}"
backup_dir = "{tmp_path / "backups"}"
[environments.staging.database]
host = "127.0.0.1"
name = "shop"
user = "shop_owner"
password_key = "POSTGRES_PASSWORD"
[environments.staging.host]
address = "db-1.example.com"
user = "deploy"
known_hosts = "{tmp_path / "known_hosts"}"
""")
    return load_settings(config).environment("staging")


def test_the_tool_runs_in_the_database_container_with_no_secret_in_its_arguments(tmp_path: Path) -> None:
    env = _env(tmp_path)
    hosted = HostedDatabase(env, Redactor.for_environment(env))
    argv = hosted.exec_argv(["pg_dump", "-Fc"], app="backup", options="-c synchronous_commit=off")
    assert argv[0] == "ssh" and "db-1.example.com" in argv
    assert not any("Pa55" in arg for arg in argv)
    assert hosted._password_line() == PASSWORD.encode() + b"\n"
    # What the host runs, with a `docker` that answers `ps` with a container id and prints the
    # arguments of anything else: the container found by the project's labels, put in its place.
    remote = shlex.split(argv[-1])
    assert remote[:5] == ["sh", "-c", _ON_HOST, "sh", "shop-staging"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = ps ]; then printf "%s\\n" "$FAKE_PS"; echo "$@" >&2; exit 0; fi\nprintf "%s\\n" "$@"\n'
    )
    fake.chmod(0o755)
    path = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(remote, env={**path, "FAKE_PS": "0123abcd"}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "ps -q --filter label=com.docker.compose.project=shop-staging "
        "--filter label=com.docker.compose.service=postgres --filter status=running\n"
    )
    assert done.stdout.splitlines() == [
        "exec",
        "-i",
        "-e",
        "PGUSER=shop_owner",
        "-e",
        "PGDATABASE=shop",
        "-e",
        "PGAPPNAME=ultra_ops-backup",
        "-e",
        "PGOPTIONS=-c synchronous_commit=off",
        "0123abcd",
        "sh",
        "-c",
        _IN_CONTAINER,
        "sh",
        "pg_dump",
        "-Fc",
    ]
    # No running database container: its own exit code, which the caller names.
    done = subprocess.run(remote, env={**path, "FAKE_PS": ""}, capture_output=True, text=True, timeout=30)
    assert done.returncode == NO_CONTAINER_EXIT and done.stdout == ""


def test_the_password_line_is_read_and_the_rest_of_stdin_goes_to_the_tool() -> None:
    tool = 'printf "%s|" "$PGPASSWORD"; cat'
    data = f"{PASSWORD}\n".encode() + bytes(range(256)) * 64
    done = subprocess.run(
        ["sh", "-c", _IN_CONTAINER, "sh", "sh", "-c", tool], input=data, capture_output=True, timeout=30
    )
    assert done.stdout == PASSWORD.encode() + b"|" + bytes(range(256)) * 64
    # No password: none is set, rather than an empty one.
    done = subprocess.run(
        ["sh", "-c", _IN_CONTAINER, "sh", "sh", "-c", 'echo "${PGPASSWORD-unset}"'],
        input=b"\n",
        capture_output=True,
        timeout=30,
    )
    assert done.stdout == b"unset\n"


def test_the_snapshot_id_is_the_next_line_and_the_tool_starts_only_with_it(tmp_path: Path) -> None:
    """The dump's session starts before the snapshot exists: the container's shell runs up to the
    tool's version, then waits for the id's line, puts it in place of SNAPSHOT_ARG and runs the
    tool; stdin closed without it (our side gave up), the tool never runs."""
    started, ran = tmp_path / "started", tmp_path / "ran"
    tool = tmp_path / "tool"
    tool.write_text(
        f'#!/bin/sh\nif [ "$1" = --version ]; then touch {started}; exit 0; fi\ntouch {ran}\necho "$@"; cat\n'
    )
    tool.chmod(0o755)
    argv = ["sh", "-c", _IN_CONTAINER, "sh", str(tool), "-Fc", SNAPSHOT_ARG, "-Z1"]

    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{PASSWORD}\n".encode())
    proc.stdin.flush()
    deadline = time.monotonic() + 10
    while not started.exists():
        assert time.monotonic() < deadline, "the tool's start waited for the snapshot"
        time.sleep(0.02)
    assert not ran.exists()
    out, _ = proc.communicate(b"00000003-0000001B-1\n" + bytes(range(256)), timeout=30)
    assert out == b"-Fc --snapshot=00000003-0000001B-1 -Z1\n" + bytes(range(256))

    started.unlink()
    ran.unlink()
    done = subprocess.run(argv, input=f"{PASSWORD}\n".encode(), capture_output=True, timeout=30)
    assert done.returncode != 0 and done.stdout == b""
    assert started.exists() and not ran.exists()


def test_the_dump_is_handed_to_the_disk_as_it_arrives(tmp_path: Path) -> None:
    """start_writeback (the dump's sink calls it every WRITEBACK_BYTES, so its final fsync waits
    for the last part only) reaches the kernel for an open file, and says when it could not (a
    closed descriptor) instead of raising."""
    fd = os.open(tmp_path / "dump", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * (1 << 20))
        assert start_writeback(fd, 0, 1 << 20) is sys.platform.startswith("linux")
    finally:
        os.close(fd)
    assert start_writeback(fd, 0, 1 << 20) is False


def test_a_password_with_a_line_break_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _env(tmp_path).config_file
    config.write_text(
        config.read_text().replace('password_key = "POSTGRES_PASSWORD"', 'password_env = "UO_TEST_PG_PW"')
    )
    monkeypatch.setenv("UO_TEST_PG_PW", "two\nlines")
    env = load_settings(config).environment("staging")
    with pytest.raises(BackupError, match="holds a line break"):
        HostedDatabase(env, Redactor.for_environment(env))._password_line()
