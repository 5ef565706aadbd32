"""The release's image on the environment's host: built here, then brought there.

Without a registry the image travels over the ssh connection itself: `docker save IMAGE | ssh host
docker load`, streamed (no file on either side, bounded by a timeout, ended by a cut network through
ssh's keepalives). Nothing travels when the host already has that image id: under the same name
(a redeploy, a rollback to a release it ran), or under another name (then it is only tagged).

With a registry the image was pushed from here, and the host pulls it. A registry on this machine's
loopback is not reachable from the host: the pull then goes through a reverse tunnel (`ssh -R`) that
puts the registry on the host's loopback at the same port, so the image's name stays the same on
both sides (and Docker trusts a loopback registry without TLS on either).

An image id is the digest of its config: the same on both sides when the same image arrived, so it
is what is compared, never a tag.
"""

from __future__ import annotations

import time

from ultra_ops.engine import shell
from ultra_ops.engine.errors import CommandFailed, RuntimeFailure
from ultra_ops.engine.hosts.reach import is_loopback
from ultra_ops.engine.hosts.ssh import SshHost
from ultra_ops.engine.secrets import Log, NullLog

_INSPECT_S = 60.0
TRANSFER_TIMEOUT_S = 3600.0


def local_image_id(image: str) -> str | None:
    """The id of `image` in this machine's Docker engine, or None when it has no such image."""
    try:
        done = shell.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], timeout=_INSPECT_S, check=False)
    except CommandFailed as exc:
        raise RuntimeFailure(f"cannot ask this machine's Docker engine about {image}: {exc}") from None
    return done.stdout.strip() or None if done.returncode == 0 else None


def host_image_id(host: SshHost, image: str) -> str | None:
    """The id of `image` (a name or an id) in the host's Docker engine, or None."""
    done = host.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], timeout=_INSPECT_S, check=False)
    return done.stdout.strip() or None if done.returncode == 0 else None


def send_image(host: SshHost, image: str, *, log: Log | None = None, timeout: float = TRANSFER_TIMEOUT_S) -> str:
    """Make the host's `image` the one this machine has; what was done, in words."""
    log = log or NullLog()
    here = local_image_id(image)
    there = host_image_id(host, image)
    if here is None:
        if there is not None:
            return f"{image} is on {host.where} (not built here)"
        raise RuntimeFailure(f"image {image} is neither on this machine nor on {host.where}: build it first")
    if there == here:
        log.info(f"{image} is on {host.where} already ({_short(here)}): not sent")
        return "already on the host"
    if host_image_id(host, here) is not None:
        host.run(["docker", "tag", here, image], timeout=_INSPECT_S)
        log.info(f"{image} ({_short(here)}) is on {host.where} under another name: tagged there, not sent")
        return "tagged on the host"
    started = time.monotonic()
    log.info(f"sending {image} ({_short(here)}) to {host.where}: docker save | ssh docker load")
    host.run(["docker", "load", "--quiet"], feed=["docker", "save", image], timeout=timeout)
    arrived = host_image_id(host, image)
    if arrived != here:
        raise RuntimeFailure(
            f"{image} on {host.where} is {_short(arrived)} after docker load, not {_short(here)} as sent"
        )
    log.info(f"{image} sent to {host.where} in {time.monotonic() - started:.1f} s")
    return "sent to the host"


def pull_on_host(
    host: SshHost, image: str, registry: str, *, log: Log | None = None, timeout: float = TRANSFER_TIMEOUT_S
) -> str:
    """`docker pull image` on the host; through a reverse tunnel when `registry` is on this
    machine's loopback. Skipped when the host has that image id already."""
    log = log or NullLog()
    here = local_image_id(image)
    if here is not None and host_image_id(host, image) == here:
        log.info(f"{image} is on {host.where} already ({_short(here)}): not pulled")
        return "already on the host"
    address = registry.split("/", 1)[0]
    name, _, port = address.rpartition(":")
    extra: list[str] = []
    how = "from the registry"
    if name and is_loopback(name) and port.isdigit():
        # The host's end at the same address, so the image's name resolves there as here.
        extra = ["-o", "ExitOnForwardFailure=yes", "-R", f"127.0.0.1:{port}:127.0.0.1:{port}"]
        how = f"from this machine's registry {address} through a reverse tunnel"
    log.info(f"pulling {image} on {host.where} {how}")
    host.run(["docker", "pull", "--quiet", image], timeout=timeout, extra=extra)
    arrived = host_image_id(host, image)
    if here is not None and arrived != here:
        raise RuntimeFailure(f"{image} pulled on {host.where} is {_short(arrived)}, not {_short(here)} as pushed")
    return "pulled on the host"


def _short(image_id: str | None) -> str:
    return image_id.removeprefix("sha256:")[:12] if image_id else "no image"
