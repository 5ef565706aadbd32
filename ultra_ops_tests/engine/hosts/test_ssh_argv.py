"""The ssh argument lists and the classification of ssh's failures: pure, no host needed."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from ultra_ops.engine.hosts import files
from ultra_ops.engine.hosts.ssh import (
    HostAuthenticationFailed,
    HostConnectionRefused,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    SshHost,
    classify,
)
from ultra_ops.engine.settings.host import HostSettings

pytestmark = pytest.mark.unit

SETTINGS = HostSettings(
    address="10.0.0.5",
    user="deploy",
    port=2222,
    identity_file=Path("/keys/id_ed25519"),
    known_hosts=Path("/etc/ultra/known_hosts"),
    connect_timeout_s=4,
)


def options(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")


def test_every_connection_checks_the_host_and_never_prompts() -> None:
    argv = SshHost("staging", SETTINGS).argv(["docker", "ps"])
    opts = options(argv)
    assert opts["BatchMode"] == "yes"
    assert opts["StrictHostKeyChecking"] == "yes"
    assert opts["UserKnownHostsFile"] == "/etc/ultra/known_hosts"
    assert opts["GlobalKnownHostsFile"] == "/dev/null"
    assert opts["UpdateHostKeys"] == "no"
    assert opts["IdentitiesOnly"] == "yes"
    assert (opts["ServerAliveInterval"], opts["ServerAliveCountMax"], opts["ConnectTimeout"]) == ("2", "2", "4")
    assert argv[argv.index("-i") + 1] == "/keys/id_ed25519"
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "deploy"
    assert argv[-3:] == ["--", "10.0.0.5", "docker ps"]


def test_the_agent_when_no_identity_file() -> None:
    argv = SshHost("staging", HostSettings("h", "deploy", Path("/kh"))).argv(["true"])
    assert "-i" not in argv and "IdentitiesOnly" not in options(argv)


def test_the_remote_command_is_the_argument_list_quoted() -> None:
    tricky = ["printf", "%s", "a b", "$(reboot)", "it's", ";", "*"]
    command = SshHost.remote_command(tricky)
    assert shlex.split(command) == tricky
    with_env = SshHost.remote_command(["docker-compose", "up"], {"ULTRA_VERSION": "v1.2.3", "X": "a b"})
    assert shlex.split(with_env) == ["env", "ULTRA_VERSION=v1.2.3", "X=a b", "docker-compose", "up"]
    with pytest.raises(ValueError):
        SshHost.remote_command(["true"], {"A;B": "x"})
    with pytest.raises(ValueError):
        SshHost.remote_command([])


def test_the_write_script_takes_its_path_as_an_argument() -> None:
    command = files.write_command("/srv/it's here/.env", "A=1\n", mode=0o640)
    assert command[:2] == ["sh", "-c"]
    assert command[3:6] == ["write", "/srv/it's here/.env", "640"]
    with pytest.raises(ValueError, match="absolute"):
        files.write_command("srv/.env", "")


@pytest.mark.parametrize(
    "stderr, kind, reason",
    [
        ("ssh: connect to host 10.0.0.5 port 2222: Connection refused", HostConnectionRefused, "refused on port 2222"),
        ("ssh: connect to host 10.0.0.5 port 2222: Connection timed out", HostUnreachable, "no answer within 4 s"),
        ("ssh: connect to host 10.0.0.5 port 2222: No route to host", HostUnreachable, "no answer"),
        ("ssh: Could not resolve hostname nowhere: Name or service not known", HostUnreachable, "no answer"),
        ("Timeout, server 10.0.0.5 not responding.", HostUnreachable, "connection was lost"),
        ("deploy@10.0.0.5: Permission denied (publickey).", HostAuthenticationFailed, "refused the key /keys/id"),
        (
            "No ED25519 host key is known for [10.0.0.5]:2222 and you have requested strict checking.\n"
            "Host key verification failed.",
            HostKeyUnknown,
            "not in /etc/ultra/known_hosts",
        ),
        (
            "@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@\nHost key verification failed.",
            HostKeyChanged,
            "has CHANGED",
        ),
    ],
)
def test_ssh_failures_are_named(stderr: str, kind: type, reason: str) -> None:
    error = classify(stderr, 255, "staging's host deploy@10.0.0.5:2222", SETTINGS)
    assert type(error) is kind
    assert reason in str(error)
    assert str(error).startswith("staging's host deploy@10.0.0.5:2222: ")


def test_the_remote_commands_own_exit_is_not_sshs() -> None:
    assert classify("Connection refused", 1, "w", SETTINGS) is None
    assert classify("", 255, "w", SETTINGS) is None


def test_a_tunnel_forwards_loopback_only_and_fails_rather_than_half_opens() -> None:
    from ultra_ops.engine.hosts.tunnel import Tunnel

    argv = Tunnel(SshHost("staging", SETTINGS), 5432, target_host="db").argv(40001)
    assert argv[argv.index("-L") + 1] == "127.0.0.1:40001:db:5432"
    assert "-N" in argv
    opts = options(argv)
    assert opts["ExitOnForwardFailure"] == "yes" and opts["StrictHostKeyChecking"] == "yes"
    assert argv[-2:] == ["--", "10.0.0.5"]
