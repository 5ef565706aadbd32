"""The machine an environment lives on: `[environments.X.host]`, reached over SSH.

[environments.production.host]
address = "prod-1.example.com"     # a name or an IP address
user = "deploy"                    # an account in the host's docker group
port = 22
identity_file = "~/.ssh/ultra_ops_production"   # the private key's path; unset: the ssh agent
known_hosts = "known_hosts"        # the host keys ultra_ops trusts (default: beside this file)
connect_timeout_s = 5
root = "/srv/ultra-ops/production" # the environment's files on the host (env file, compose file)
logs_volume = "backend-logs"       # the compose file's volume the services write their logs into

Never key material here: `identity_file` is a path, or the key is in the agent (SSH_AUTH_SOCK).
Host keys are only ever read from `known_hosts` (an entry for a port other than 22 is written
`[address]:port`); ultra_ops never adds one, so an unknown or changed key is refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ultra_ops.engine.settings.table import TableReader, resolve_path

DEFAULT_KNOWN_HOSTS = "known_hosts"
# A host name, an IPv4 or an IPv6 address; never a leading '-', which ssh would read as an option.
_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,252}")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
# ssh reads whitespace and '"' in an -o value as separators or quotes and expands '%' tokens in
# UserKnownHostsFile and -i: such a path would silently name another file.
_SSH_PATH_UNSAFE = re.compile(r'[\s"%]')


@dataclass(frozen=True)
class HostSettings:
    address: str
    user: str
    known_hosts: Path
    port: int = 22
    identity_file: Path | None = None  # None: the keys of the ssh agent
    connect_timeout_s: float = 5.0
    root: PurePosixPath = PurePosixPath("/srv/ultra-ops")  # the environment's folder on the host
    logs_volume: str = "backend-logs"  # the compose volume holding the services' logs (archive-logs)

    def describe(self) -> str:
        """`deploy@prod-1.example.com:22`: the host as messages name it."""
        return f"{self.user}@{self.address}:{self.port}"


def read_host(r: TableReader | None, base: Path, environment: str) -> HostSettings | None:
    if r is None:
        return None
    address = r.get("address", str, required=True)
    if not _ADDRESS.fullmatch(address):
        raise r.fail("address", f"{address!r} is not a host name or IP address")
    user = r.get("user", str, required=True)
    if not _USER.fullmatch(user):
        raise r.fail("user", f"{user!r} is not a user name (letters, digits, '_', '.' and '-')")
    settings = HostSettings(
        address=address,
        user=user,
        port=r.port("port", 22),  # type: ignore[arg-type]
        identity_file=_ssh_path(r, "identity_file", base, None),
        known_hosts=_ssh_path(r, "known_hosts", base, DEFAULT_KNOWN_HOSTS),  # type: ignore[arg-type]
        connect_timeout_s=r.above_zero("connect_timeout_s", 5.0, at_most=120, unit=" seconds"),
        root=_remote_root(r, environment),
        logs_volume=_volume(r),
    )
    r.finish()
    return settings


_VOLUME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _volume(r: TableReader) -> str:
    value = r.get("logs_volume", str, "backend-logs")
    if not _VOLUME.fullmatch(value):
        raise r.fail("logs_volume", f"{value!r} is not a compose volume name (letters, digits, '_', '.' and '-')")
    return value


def _remote_root(r: TableReader, environment: str) -> PurePosixPath:
    value = r.get("root", str, f"/srv/ultra-ops/{environment}")
    root = PurePosixPath(value)
    if not root.is_absolute() or ".." in root.parts or root == PurePosixPath("/"):
        raise r.fail("root", f"{value!r} is not an absolute folder on the host (e.g. /srv/ultra-ops/{environment})")
    return root


def _ssh_path(r: TableReader, name: str, base: Path, default: str | None) -> Path | None:
    value = r.get(name, str, default)
    if value is None:
        return None
    if "PRIVATE KEY" in value or "\n" in value or value.startswith(("ssh-", "ecdsa-")):
        raise r.fail(name, "holds key material: give the path of a file (or use the ssh agent), never the key")
    if not value:
        raise r.fail(name, "is empty: give the path of a file")
    path = resolve_path(base, os.path.expanduser(value))
    if _SSH_PATH_UNSAFE.search(str(path)):
        raise r.fail(name, f"{str(path)!r} contains whitespace, '\"' or '%', which ssh would not read as one path")
    return path
