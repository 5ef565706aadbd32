"""Commands on an environment's host over SSH, and each way reaching it fails: one typed error,
fast, naming the environment and the host, never the key."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ultra_ops.engine.hosts.ssh import (
    HostAuthenticationFailed,
    HostConnectionRefused,
    HostError,
    HostKeyChanged,
    HostKeyUnknown,
    HostSetupError,
    HostUnreachable,
    RemoteCommandFailed,
    RemoteCommandTimeout,
)
from ultra_ops_tests.support.hosts import TestHost, make_key

pytestmark = pytest.mark.docker


def key_lines(identity: Path) -> list[str]:
    """The private key's body lines: none may appear in any message."""
    return [line for line in identity.read_text().splitlines() if line and not line.startswith("-----")]


def assert_clear(exc: HostError, host: TestHost, *, identity: Path | None = None) -> None:
    message = str(exc)
    assert "\n" not in message, "one line"
    assert message.startswith(f"staging's host root@{host.address}:"), message
    for line in key_lines(identity or host.identity):
        assert line not in message


def test_a_remote_command_gets_its_arguments_as_given(host: TestHost) -> None:
    remote = host.remote()
    tricky = ["a b", "$HOME", "x;touch /tmp/injected", "it's", '"q"', "*"]
    proc = remote.run(["printf", r"%s\n", *tricky], timeout=30)
    assert proc.stdout.splitlines() == tricky, "each argument arrives as one, unexpanded"
    assert host.exec("test", "-e", "/tmp/injected").returncode != 0
    env = remote.run(["sh", "-c", 'printf %s "$GREETING"'], remote_env={"GREETING": "it's $HOME"}, timeout=30)
    assert env.stdout == "it's $HOME"
    piped = remote.run(["sha256sum"], input="x" * 1_000_000, timeout=30)
    import hashlib

    assert piped.stdout.split()[0] == hashlib.sha256(b"x" * 1_000_000).hexdigest()


def test_a_failing_remote_command(host: TestHost) -> None:
    remote = host.remote()
    with pytest.raises(RemoteCommandFailed) as caught:
        remote.run(["sh", "-c", "echo nope >&2; exit 7"], timeout=30)
    assert caught.value.returncode == 7
    assert "exited 7: nope" in str(caught.value)
    assert_clear(caught.value, host)
    assert remote.run(["sh", "-c", "exit 7"], timeout=30, check=False).returncode == 7
    # A remote command that exits 255 is still the command's failure, not ssh's.
    with pytest.raises(RemoteCommandFailed):
        remote.run(["sh", "-c", "exit 255"], timeout=30)
    started = time.monotonic()
    with pytest.raises(RemoteCommandTimeout):
        remote.run(["sleep", "30"], timeout=2)
    assert time.monotonic() - started < 5


def test_refused(host: TestHost) -> None:
    started = time.monotonic()
    with pytest.raises(HostConnectionRefused) as caught:
        host.remote(port=2222).run(["true"], timeout=30)
    assert time.monotonic() - started < 3
    assert "connection refused on port 2222" in str(caught.value)
    assert_clear(caught.value, host)


def test_wrong_key(host: TestHost, tmp_path: Path) -> None:
    other = make_key(tmp_path / "other")
    started = time.monotonic()
    with pytest.raises(HostAuthenticationFailed) as caught:
        host.remote(identity=other).run(["true"], timeout=30)
    assert time.monotonic() - started < 3
    assert f"the host refused the key {other}" in str(caught.value)
    assert_clear(caught.value, host, identity=other)
    assert_clear(caught.value, host)
    with pytest.raises(HostSetupError, match="identity file .* does not exist"):
        host.remote(identity=tmp_path / "missing").run(["true"], timeout=30)


def test_unknown_host_key(host: TestHost) -> None:
    host.known_hosts.write_text("")
    started = time.monotonic()
    with pytest.raises(HostKeyUnknown) as caught:
        host.remote().run(["true"], timeout=30)
    assert time.monotonic() - started < 3
    assert f"not in {host.known_hosts}; refused" in str(caught.value)
    assert_clear(caught.value, host)
    assert host.known_hosts.read_text() == "", "never learnt on the fly"
    host.known_hosts.unlink()
    with pytest.raises(HostKeyUnknown, match="does not exist"):
        host.remote().run(["true"], timeout=30)


def test_changed_host_key(host: TestHost) -> None:
    assert host.remote().run(["true"], timeout=30).returncode == 0
    trusted = host.known_hosts.read_text()
    host.regenerate_host_key()
    started = time.monotonic()
    with pytest.raises(HostKeyChanged) as caught:
        host.remote().run(["true"], timeout=30)
    assert time.monotonic() - started < 3
    assert "the host key has CHANGED" in str(caught.value)
    assert_clear(caught.value, host)
    assert host.known_hosts.read_text() == trusted, "the operator's known_hosts is never rewritten"
    host.fleet.trust(host)  # the operator checked the new key and put it in
    assert host.remote().run(["true"], timeout=30).returncode == 0


def test_a_cut_network_is_noticed_within_10_s(host: TestHost) -> None:
    remote = host.remote()
    failure: list[BaseException] = []
    ended: list[float] = []

    def long_command() -> None:
        try:
            remote.run(["sleep", "120"], timeout=150)
        except BaseException as exc:  # noqa: BLE001 - the thread hands it to the test
            failure.append(exc)
        ended.append(time.monotonic())

    worker = threading.Thread(target=long_command)
    worker.start()
    deadline = time.monotonic() + 30
    while host.exec("pgrep", "-x", "sleep").returncode != 0:  # the command runs on the host
        assert time.monotonic() < deadline and worker.is_alive(), failure
        time.sleep(0.05)
    host.cut()
    cut_at = time.monotonic()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert ended[0] - cut_at < 10, f"noticed after {ended[0] - cut_at:.1f} s"
    assert isinstance(failure[0], HostUnreachable), failure
    assert "connection was lost" in str(failure[0])
    assert_clear(failure[0], host)  # type: ignore[arg-type]
    # A new connection to the cut host fails within its connect timeout.
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as caught:
        host.remote(connect_timeout_s=3).run(["true"], timeout=60)
    assert time.monotonic() - started < 6
    assert "no answer within 3 s" in str(caught.value)
    host.restore()
    assert remote.run(["true"], timeout=30).returncode == 0


@pytest.mark.host_images("ultra-local/python:3.11")
def test_docker_inside_the_host(host: TestHost) -> None:
    remote = host.remote(user="deploy")
    proc = remote.run(["docker", "run", "--rm", "ultra-local/python:3.11", "true"], timeout=120)
    assert proc.returncode == 0
    probe = remote.probe()
    assert probe.answers and probe.detail.startswith("Docker 20.10"), probe
    host.exec("pkill", "-x", "dockerd")
    deadline = time.monotonic() + 30
    while (probe := remote.probe()).answers:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "its Docker engine does not" in probe.detail
