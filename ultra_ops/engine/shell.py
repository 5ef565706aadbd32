"""Running external commands: the one runner every child process of ultra_ops goes through.

- always an argument list, never a shell string;
- always a timeout: the command's whole process group is killed when it runs out;
- always an allowlisted environment (child_env): the basics a program needs (PATH, HOME, locale,
  TMPDIR, ...) plus what the caller adds and the variables the environment's own config names,
  never the rest of ours (another environment's passwords, every LLM key);
- each command leads its own process group, killed whole on timeout, error or interrupt;
- no preexec_fn (code between fork and exec can deadlock a threaded parent): a command that must
  not outlive ultra_ops (pg_dump writing into a folder the next backup cleans up) runs under a small
  watchdog that kills its group when our end of a pipe closes, that is when we die, even by SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ultra_ops.engine.errors import CommandFailed

if TYPE_CHECKING:
    from ultra_ops.engine.secrets import Redactor
    from ultra_ops.engine.settings import Environment

# What any program needs to run as the operator would run it; none of it is a secret of an environment.
BASIC_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "TERM",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "SSH_AUTH_SOCK",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "EMAIL",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_CONFIG_GLOBAL",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_CONFIG",
        "DOCKER_CERT_PATH",
        "DOCKER_TLS_VERIFY",
        "XDG_RUNTIME_DIR",
    }
)
BASIC_ENV_PREFIXES = ("LC_",)

# Runs `argv[1:]` in our process group (the group the runner created) and kills that group when
# its stdin, a pipe whose only writer is the ultra_ops process, reaches end of file.
_WATCHDOG = """\
import os, signal, subprocess, sys, threading
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)
def watch():
    while os.read(0, 512):
        pass
    os.killpg(0, signal.SIGKILL)
threading.Thread(target=watch, daemon=True).start()
code = child.wait()
sys.exit(code if code >= 0 else 128 - code)
"""


def child_env(
    environment: Environment | None = None, extra: Mapping[str, str] | None = None, *, names: Iterable[str] = ()
) -> dict[str, str]:
    """The environment of a child process: the basics from ours, the variables `environment`'s config
    names (its password and key variables) and `names`, then `extra`, which wins."""
    wanted = set(BASIC_ENV) | set(names)
    if environment is not None:
        wanted |= set(environment.secret_env_names())
    env = {k: v for k, v in os.environ.items() if k in wanted or k.startswith(BASIC_ENV_PREFIXES)}
    env.update(extra or {})
    return env


def watched(argv: Sequence[str]) -> list[str]:
    """`argv` under the watchdog: its process group is killed when the watchdog's stdin, which must
    be a pipe whose only writer is this process (os.pipe, close-on-exec), reaches end of file."""
    return [sys.executable, "-I", "-S", "-c", _WATCHDOG, *argv]


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the command's whole group; only while its leader is unreaped, so the id is still ours."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def run(
    args: Sequence[str],
    *,
    timeout: float,
    environment: Environment | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    redact: Redactor | Callable[[str], str] | None = None,
    check: bool = True,
    die_with_parent: bool = False,
    heartbeat: Callable[[float], None] | None = None,
    every_s: float = 15.0,
    error: type[Exception] = CommandFailed,
    input: str | None = None,
    stdin_path: Path | None = None,
    feed: Sequence[str] | None = None,
    stdout_path: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end and return its output; the child's environment is
    child_env(environment, env). Raises `error` (CommandFailed by default), redacted, when the
    program is missing, runs out of `timeout` seconds or (with check) exits non-zero.
    `heartbeat(elapsed_s)` is called every `every_s` while it runs. The command reads `input`, the
    file `stdin_path`, or the output of the command `feed` (streamed: `docker save | ssh ... docker
    load`, no file between; it runs under the same timeout, and its failure is the command's: when
    it exits non-zero its stderr's tail ends the command's stderr, and a command that exited 0 on a
    stream cut short fails) on its stdin (else nothing). `stdout_path`: the command's output goes
    into that file, byte for byte (created 0600, or truncated), and stdout is returned empty."""
    name = Path(args[0]).name
    argv = list(args)
    watch_r = watch_w = None
    if [input is not None, stdin_path is not None, die_with_parent, feed is not None].count(True) > 1:
        raise ValueError("input, stdin_path, feed and die_with_parent each take the command's stdin: give one")
    stdin: Any = subprocess.PIPE if input is not None else subprocess.DEVNULL
    if stdin_path is not None:
        try:
            stdin = open(stdin_path, "rb")  # noqa: SIM115 - closed once the child has its copy
        except OSError as exc:
            raise error(f"cannot read {stdin_path}: {exc.strerror}") from None
    feeder: subprocess.Popen[bytes] | None = None
    feed_errors: Any = None
    if feed is not None:
        feed_errors = tempfile.TemporaryFile()  # noqa: SIM115 - a file: a long stream never blocks on it
        try:
            feeder = subprocess.Popen(
                list(feed),
                env=child_env(environment, env),
                cwd=cwd,
                close_fds=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=feed_errors,
                process_group=0,
            )
        except OSError as exc:
            feed_errors.close()
            raise error(f"cannot start {Path(feed[0]).name}: {exc.strerror}") from None
        stdin = feeder.stdout
    if die_with_parent:
        argv = watched(argv)
        # Our end is not inherited (os.pipe is close-on-exec), so only this process holds it open.
        watch_r, watch_w = os.pipe()
        stdin = watch_r
    message: str | None = None
    stdout: Any = subprocess.PIPE
    if stdout_path is not None:
        try:
            stdout = open(stdout_path, "wb", opener=lambda path, flags: os.open(path, flags, 0o600))  # noqa: SIM115
        except OSError as exc:
            raise error(f"cannot write {stdout_path}: {exc.strerror}") from None
    try:
        proc = subprocess.Popen(
            argv,
            env=child_env(environment, env),
            cwd=cwd,
            close_fds=True,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            process_group=0,
            umask=0o077,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    except FileNotFoundError:
        raise error(f"{name} is not installed or not on PATH") from None
    except OSError as exc:
        raise error(f"cannot start {name}: {exc.strerror}") from None
    except BaseException:
        if feeder is not None:
            _kill_group(feeder)
        raise
    finally:
        if watch_r is not None:
            os.close(watch_r)
        if stdin_path is not None or feeder is not None:
            stdin.close()  # the child has its copy: the feeder gets SIGPIPE when the child stops reading
        if stdout_path is not None:
            stdout.close()  # the child has its copy
    started = time.monotonic()
    deadline = started + timeout
    try:
        while True:
            left = max(0.0, deadline - time.monotonic())
            try:
                out, err = proc.communicate(input, timeout=min(every_s, left) if heartbeat else left)
                break
            except subprocess.TimeoutExpired:  # retrying communicate() loses no output
                if time.monotonic() >= deadline:
                    _kill_group(proc)
                    message = f"{name} did not finish within {timeout:g}s"
                    break
                if heartbeat is not None:
                    heartbeat(time.monotonic() - started)
        if feeder is not None and message is None:
            try:
                feeder.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                message = f"{Path(feed[0]).name} did not finish within {timeout:g}s"  # type: ignore[index]
    except BaseException:
        _kill_group(proc)
        if feeder is not None:
            _kill_group(feeder)
        raise
    finally:
        if watch_w is not None:
            os.close(watch_w)
        if feeder is not None:
            _kill_group(feeder)  # only while unreaped: a finished feeder is left alone
            feed_errors.seek(0)
            feed_tail = feed_errors.read().decode("utf-8", "replace").strip().splitlines()[-3:]
            feed_errors.close()
    if message is not None:
        raise error(redact(message) if redact else message)
    if feeder is not None and feeder.returncode != 0:
        said = f"{Path(feed[0]).name} exited {feeder.returncode}: " + (" | ".join(feed_tail) or "no output")  # type: ignore[index]
        if proc.returncode == 0:
            raise error(redact(said) if redact else said)
        err = f"{err.rstrip()}\n{said}" if err else said
    if check and proc.returncode != 0:
        tail = (err or out or "").strip().splitlines()[-5:]
        message = f"{name} exited {proc.returncode}: " + " | ".join(tail)
        raise error(redact(message) if redact else message)
    return subprocess.CompletedProcess(list(args), proc.returncode, out or "", err)


def start(
    args: Sequence[str],
    *,
    environment: Environment | None = None,
    env: Mapping[str, str] | None = None,
    error: type[Exception] = CommandFailed,
    die_with_parent: bool = False,
    stderr: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a command that lives beside ultra_ops and talks over pipes (stdin, stdout and stderr,
    binary and unbuffered): a session such as the environment lock's on its host. It leads its own
    process group (a Ctrl-C at the terminal reaches ultra_ops, which ends it in order) and its
    environment is child_env's. The caller bounds every wait on it and ends it with `end`.
    `die_with_parent`: it runs under the watchdog, whose stdin is the returned process's stdin (the
    command itself reads nothing): its group is killed when that pipe is closed, by `end` or by our
    death, even by SIGKILL (an ssh tunnel or master that must not outlive its run). `stderr`: a file
    its stderr goes to instead of a pipe (a long-lived command nobody reads while it runs)."""
    name = Path(args[0]).name
    try:
        return subprocess.Popen(
            watched(args) if die_with_parent else list(args),
            env=child_env(environment, env),
            close_fds=True,
            # A pipe from subprocess is close-on-exec: only this process holds its writing end,
            # which is what the watchdog needs.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr if stderr is not None else subprocess.PIPE,
            bufsize=0,
            process_group=0,
            umask=0o077,
        )
    except FileNotFoundError:
        raise error(f"{name} is not installed or not on PATH") from None
    except OSError as exc:
        raise error(f"cannot start {name}: {exc.strerror}") from None


def end(proc: subprocess.Popen, timeout: float) -> int:
    """Wait up to `timeout` seconds for a started command to exit, then kill its group; its exit code.
    (A watched command ends as soon as its stdin is closed: close it first, then `end` reaps it.)"""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return proc.wait()


# A stream's pipes are widened to this (Linux's default is 64 KiB; 1 MiB is the unprivileged
# maximum): the child (ssh relaying a dump) writes on while this process is not scheduled on a busy
# machine instead of stalling the dump behind it, and each read below takes all that gathered.
STREAM_PIPE_BYTES = 1 << 20


def _widen_pipe(fd: int) -> None:
    import fcntl

    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, STREAM_PIPE_BYTES)
    except (OSError, AttributeError):
        pass  # not Linux, or over a lowered pipe-max-size: the default size works, only wakes more


def stream(
    args: Sequence[str],
    *,
    timeout: float,
    sink: Callable[[bytes], None] | None = None,
    source: Iterable[bytes] | None = None,
    environment: Environment | None = None,
    env: Mapping[str, str] | None = None,
    redact: Redactor | Callable[[str], str] | None = None,
    heartbeat: Callable[[float], None] | None = None,
    every_s: float = 15.0,
    error: type[Exception] = CommandFailed,
) -> subprocess.CompletedProcess[str]:
    """Run a command whose stdout or stdin is a stream too big to hold (a dump): each chunk of its
    stdout is handed to `sink` as it arrives, and `source`'s chunks are written to its stdin (from a
    thread; stdin is closed after the last). Its stderr is captured in a file and returned as text;
    the exit code is returned, not checked (the caller reads it: ssh's own 255, say). The same
    bounds as `run`: the whole group is killed when `timeout` runs out (`error` raised) or anything
    raises meanwhile, `sink` included. No watchdog is needed for the child to die with us: the
    pipe of its stdout or stdin has only us at the other end, so it gets EPIPE or end of file."""
    import select
    import tempfile
    import threading

    name = Path(args[0]).name
    errors = tempfile.TemporaryFile()  # a file: a chatty stderr never blocks the child
    try:
        proc = subprocess.Popen(
            list(args),
            env=child_env(environment, env),
            close_fds=True,
            stdin=subprocess.PIPE if source is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if sink is not None else subprocess.DEVNULL,
            stderr=errors,
            process_group=0,
            umask=0o077,
        )
    except OSError as exc:
        errors.close()
        if isinstance(exc, FileNotFoundError):
            raise error(f"{name} is not installed or not on PATH") from None
        raise error(f"cannot start {name}: {exc.strerror}") from None
    for pipe in (proc.stdout, proc.stdin):
        if pipe is not None:
            _widen_pipe(pipe.fileno())
    writer_failed: list[BaseException] = []

    def write() -> None:
        assert proc.stdin is not None and source is not None
        try:
            for chunk in source:
                proc.stdin.write(chunk)
                proc.stdin.flush()  # now: the source may wait before its next chunk (a dump's snapshot id)
        except (BrokenPipeError, ValueError):
            pass  # the child ended (or was killed) before reading it all: its exit code says why
        except BaseException as exc:  # noqa: BLE001 - reading the source failed: handed to the caller
            writer_failed.append(exc)
            _kill_group(proc)
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    writer = threading.Thread(target=write, name="uo-stream-in", daemon=True) if source is not None else None
    started = time.monotonic()
    deadline = started + timeout
    beat = started + every_s
    timed_out = False
    try:
        if writer is not None:
            writer.start()
        out = proc.stdout.fileno() if proc.stdout is not None else None
        while True:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if heartbeat is not None and now >= beat:
                heartbeat(now - started)
                beat = now + every_s
            wait = min(deadline, beat if heartbeat else deadline) - now
            if out is None:
                try:
                    proc.wait(timeout=min(wait, 0.5))
                    break
                except subprocess.TimeoutExpired:
                    continue
            ready, _, _ = select.select([out], [], [], min(wait, 0.5))
            if ready:
                chunk = os.read(out, STREAM_PIPE_BYTES)
                if not chunk:
                    break
                sink(chunk)  # type: ignore[misc]
        if not timed_out:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            _kill_group(proc)
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        if writer is not None:
            writer.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        errors.seek(0)
        err = errors.read().decode("utf-8", "replace")
        errors.close()
    if writer_failed:
        raise writer_failed[0]
    if timed_out:
        message = f"{name} did not finish within {timeout:g}s"
        raise error(redact(message) if redact else message)
    return subprocess.CompletedProcess(list(args), proc.returncode, "", err)
