"""Env files that are not env files: refused with exit 2 naming the file and the line, before any run,
never hanging on a FIFO and never echoing a value."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ultra_ops.engine.envfile import read_env_file, update_env_file
from ultra_ops.engine.errors import InputError
from ultra_ops.engine.verify.decisions import ask, pending
from ultra_ops_tests.support.cli import run_cli
from ultra_ops_tests.support.services import REPO
from ultra_ops_tests.support.stack import Stack

SECRET = "sk-live-0123456789abcdef"  # the value on every bad line: no message may carry it

BAD_LINES = {
    "space in the key": (f"ULTRA VERSION={SECRET}", "line 2", "not a variable name"),
    "no key": (f"={SECRET}", "line 2", "no key"),
    "no equals sign": (SECRET, "line 2", "no '='"),
    "key starting with a digit": (f"1KEY={SECRET}", "line 2", "not a variable name"),
    "NUL byte in a value": (f"API_TOKEN={SECRET}\0tail", "line 2 (key API_TOKEN)", "NUL"),
    "NUL byte in a comment": ("# a comment\0", "line 2", "NUL"),
}


def _write(path: Path, bad_line: str) -> None:
    path.write_bytes(f"ULTRA_FEATURE_FLAGS=search\n{bad_line}\nULTRA_VERSION=\n".encode())


@pytest.mark.unit
@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_bad_line_names_file_line_and_key_never_the_value(tmp_path: Path, case: str) -> None:
    line, where, reason = BAD_LINES[case]
    path = tmp_path / ".env.staging"
    _write(path, line)
    with pytest.raises(InputError) as info:
        read_env_file(path)
    message = str(info.value)
    assert str(path) in message and where in message and reason in message
    assert SECRET not in message and "0123456789" not in message


@pytest.mark.unit
def test_valid_forms_still_parse(tmp_path: Path) -> None:
    path = tmp_path / ".env.staging"
    path.write_bytes(
        b"\xef\xbb\xbf# comment\r\n\r\n  \nexport A=1\nexport\tB = two \nC=\"quoted value\"\nD='single'\n"
        b"E=\nF=a=b\n_G9=x # not a comment\n"
    )
    assert read_env_file(path) == {
        "A": "1",
        "B": "two",
        "C": "quoted value",
        "D": "single",
        "E": "",
        "F": "a=b",
        "_G9": "x # not a comment",
    }
    assert read_env_file(tmp_path / "missing") == {}  # a first deploy has none yet


@pytest.mark.unit
def test_not_a_regular_file_is_refused_without_opening_it(tmp_path: Path) -> None:
    folder, fifo, link = tmp_path / "folder", tmp_path / "fifo", tmp_path / "link"
    folder.mkdir()
    os.mkfifo(fifo)  # no writer: a blocking open would wait forever
    link.symlink_to(tmp_path / "gone")
    for path, words in ((folder, "is a directory"), (fifo, "FIFO"), (link, "does not exist")):
        with pytest.raises(InputError, match=words) as info:
            read_env_file(path)
        assert str(path) in str(info.value)
    with pytest.raises(InputError, match="FIFO"):
        update_env_file(fifo, {"ULTRA_VERSION": "v1.0.0"})
    with pytest.raises(InputError, match="line 1"):  # a broken file is refused, not rewritten
        (tmp_path / "bad").write_text("NOT AN ENV LINE\n")
        update_env_file(tmp_path / "bad", {"ULTRA_VERSION": "v1.0.0"})
    assert (tmp_path / "bad").read_text() == "NOT AN ENV LINE\n"


@pytest.mark.unit
def test_an_unreadable_env_file_is_input_error(tmp_path: Path) -> None:
    path = tmp_path / ".env.staging"
    path.write_text("ULTRA_VERSION=v1\n")
    path.chmod(0o000)
    code = "from ultra_ops.engine.envfile import read_env_file\nread_env_file(__import__('sys').argv[1])"
    command = [sys.executable, "-c", code, str(path)]
    if os.geteuid() == 0:
        # root reads any file: without the capabilities that bypass file modes, it reads as an operator would.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *command]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert done.returncode == 1
    assert f"InputError: env file {path}: cannot be read (permission denied)" in done.stderr


# -- through the CLI: every command that launches a run for the environment, and init and status --

COMMANDS = [
    ["deploy", "--tag", "v1.0.0"],
    ["verify"],
    ["stop"],
    ["backups", "create"],
    ["checklist"],
    ["maintenance", "vacuum"],
    ["init"],
    ["status"],
]


def _nothing_written(stack: Stack, dagster_home: Path) -> None:
    assert not any(dagster_home.iterdir())  # no run was started
    for folder in (stack.env.backups_path, stack.env.log_dir, stack.env.state_dir):
        assert not folder.exists() or not any(folder.iterdir()), folder


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a))
@pytest.mark.parametrize("case", ["space in the key", "no key", "NUL byte in a value"])
def test_cli_refuses_a_bad_line_before_any_run(stack: Stack, dagster_home: Path, argv, case: str, capsys) -> None:
    line, where, _ = BAD_LINES[case]
    _write(stack.env.env_file, line)
    before = stack.env.env_file.read_bytes()
    try:
        assert stack.ops(*argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert str(stack.env.env_file) in err and where in err
        assert SECRET not in err
        _nothing_written(stack, dagster_home)
        assert stack.env.env_file.read_bytes() == before
    finally:
        stack.env.env_file.write_text("ULTRA_VERSION=\n")  # readable again for the fixture's teardown


@pytest.mark.parametrize("argv", [["deploy", "--tag", "v1.0.0"], ["init"], ["status"]], ids=lambda a: a[0])
def test_cli_refuses_a_folder_as_env_file(stack: Stack, dagster_home: Path, argv, capsys) -> None:
    stack.env.env_file.unlink()
    stack.env.env_file.mkdir()
    try:
        assert stack.ops(*argv) == 2
        err = capsys.readouterr().err
        assert err.strip() == (
            f"error: env file {stack.env.env_file}: is a directory, not a regular file of KEY=value lines"
        )
        _nothing_written(stack, dagster_home)
        assert stack.env.env_file.stat().st_mode & 0o777 != 0o600  # init did not chmod the folder
    finally:
        stack.env.env_file.rmdir()
        stack.env.env_file.write_text("ULTRA_VERSION=\n")


def test_console_script_refuses_a_fifo_without_hanging(stack: Stack, dagster_home: Path) -> None:
    """The real entry point, in its own process: a FIFO with no writer must not block it."""
    stack.env.env_file.unlink()
    os.mkfifo(stack.env.env_file)
    try:
        done = run_cli(
            "deploy",
            "--tag",
            "v1.0.0",
            config=stack.config,
            environment="staging",
            env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1] == (
            f"error: env file {stack.env.env_file}: is a named pipe (FIFO), not a regular file of KEY=value lines"
        )
        _nothing_written(stack, dagster_home)
    finally:
        stack.env.env_file.unlink()
        stack.env.env_file.write_text("ULTRA_VERSION=\n")


def test_a_decision_is_refused_before_its_run(stack: Stack, dagster_home: Path, capsys) -> None:
    """A rollback decided on a waiting verification runs with the env file: refused first too."""
    ask(stack.env, "verify-1", version="v1.1.0", run_id=None, summary="window inconclusive")
    _write(stack.env.env_file, BAD_LINES["no key"][0])
    try:
        assert stack.ops("verify", "--decide", "rollback", "--by", "bob") == 2
        err = capsys.readouterr().err
        assert f"error: env file {stack.env.env_file}: line 2 has no key" in err and SECRET not in err
        assert not any(dagster_home.iterdir())
        assert [r.id for r in pending(stack.env)] == ["verify-1"]  # still waiting for a decision
    finally:
        stack.env.env_file.write_text("ULTRA_VERSION=\n")
