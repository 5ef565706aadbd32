"""Test hosts that start with images in their engine: their /var/lib/docker volume a copy of a seed.

A test that needs images on its host (the stores' postgres and redis, the python base) would
otherwise stream each into each new host (`docker save | ssh docker load`): seconds of CPU per image
and host, for ssh's encryption and for docker load's untar and hashing, a dozen times a suite. A
seed is instead the /var/lib/docker of a host's engine that loaded those images once (through
`docker exec`, no ssh) and stopped cleanly; a host made with them gets a copy of it (`cp -a` in a
throwaway container, a second or two), so its engine is its own as before, in a volume of its own
removed with its fleet. The tests that are about loading itself still load (TestHost.load_image).

A seed is named by what it is made of (the host image's id, each image's id), so a rebuilt image
gets a new one; it is made under a lock of this machine (the xdist workers start at once) and marked
complete by a file written last: a seed whose maker was killed has none and is made again. Seeds
are a cache of the machine kept between runs (labelled SEED_LABEL, not with a fleet: the fleets'
sweep leaves them); making one removes the seeds of the same images made of other ids, unless in use.
To take them all away: `docker volume rm $(docker volume ls -q --filter label=org.ultra-ops.test-hosts.seed)`
(the next host that needs one makes it again).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

from ultra_ops_tests.support.host_container import FLEET_LABEL, HOST_FLAGS, OWNER_LABEL, docker, docker_load
from ultra_ops_tests.support.machine_lock import machine_lock

SEED_LABEL = "org.ultra-ops.test-hosts.seed"  # its value: the images the seed holds, space-separated
_COMPLETE = ".ultra-ops-seed-complete"
_LOAD_S = 300
_ENGINE_S = 60
_made: set[str] = set()  # seeds this process found complete


def seed_volume(host_image: str, images: tuple[str, ...]) -> str:
    """The name of the complete seed holding `images` for hosts of `host_image`, made if missing."""
    images = tuple(sorted(set(images)))
    ids = [_image_id(image) for image in (host_image, *images)]
    key = hashlib.sha256("\0".join([*images, *ids]).encode()).hexdigest()[:16]
    name = f"uo-host-seed-{key}"
    if name in _made:
        return name
    with machine_lock(f"host-seed-{key}"):
        if not _complete(name, host_image):
            _make(name, host_image, images)
    _made.add(name)
    return name


def fill_volume(seed: str, volume: str, host_image: str, *, name: str, labels: list[str]) -> None:
    """Copy `seed` into the (new, empty) `volume`: all of it as the engine wrote it, owners, modes,
    the layers' whiteouts (devices) and extended attributes (hence the hosts' capabilities).
    `labels`: the fleet's, so a copy left by a killed test goes with the fleet."""
    script = f"cp -a /seed/. /var/lib/docker/ && rm /var/lib/docker/{_COMPLETE}"
    docker(
        "run",
        "--rm",
        "--name",
        name,
        *labels,
        "--volume",
        f"{seed}:/seed:ro",
        "--volume",
        f"{volume}:/var/lib/docker",
        "--entrypoint",
        "sh",
        *HOST_FLAGS,
        host_image,
        "-c",
        script,
        timeout=_LOAD_S,
        check=True,
    )


def _image_id(image: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", image, check=True).stdout.strip()


def _complete(name: str, host_image: str) -> bool:
    if docker("volume", "inspect", name).returncode != 0:
        return False
    probe = ["run", "--rm", "--volume", f"{name}:/seed:ro", "--entrypoint", "test", host_image]
    return docker(*probe, "-e", f"/seed/{_COMPLETE}").returncode == 0


def _make(name: str, host_image: str, images: tuple[str, ...]) -> None:
    """A host's engine on the new seed volume loads `images` and stops; then the mark is written."""
    maker = f"{name}-maker"
    docker("rm", "--force", maker)  # a killed maker's, if the fleets' sweep has not taken it yet
    docker("volume", "rm", "--force", name, check=True)  # a half-made seed
    _remove_stale(images)
    docker("volume", "create", "--label", f"{SEED_LABEL}={' '.join(images)}", name, check=True)
    # The maker is labelled as a fleet of this process: swept if the process dies before removing it.
    owner = ["--label", f"{FLEET_LABEL}=seed-{name}", "--label", f"{OWNER_LABEL}={socket.gethostname()}:{os.getpid()}"]
    try:
        volume = f"{name}:/var/lib/docker"
        docker("run", "--detach", "--name", maker, *owner, "--volume", volume, *HOST_FLAGS, host_image, check=True)
        _wait_engine(maker)
        load = docker_load(["docker", "exec", "-i", maker, "docker", "load"], tuple(images), timeout=_LOAD_S)
        if load.returncode != 0:
            raise RuntimeError(f"loading {' '.join(images)} into the seed {name} failed: {load.stderr.strip()[-500:]}")
        for image in images:
            inside = docker("exec", maker, "docker", "image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
            if inside != _image_id(image):
                raise RuntimeError(f"the seed {name} has {image} as {inside or 'nothing'}, not as this machine has it")
        # A clean stop: the engine's databases closed, as a host's copy expects to find them.
        script = "kill $(pidof dockerd) && while pidof dockerd >/dev/null; do sleep 0.1; done"
        docker("exec", maker, "sh", "-c", script, check=True)
        docker("exec", maker, "touch", f"/var/lib/docker/{_COMPLETE}", check=True)
    finally:
        docker("rm", "--force", maker)


def _wait_engine(container: str) -> None:
    deadline = time.monotonic() + _ENGINE_S
    while docker("exec", container, "docker", "version").returncode != 0:
        if time.monotonic() > deadline:
            logs = docker("logs", "--tail", "20", container).stderr.strip()
            raise RuntimeError(f"the Docker engine of {container} did not answer within {_ENGINE_S} s: {logs[-800:]}")
        time.sleep(0.2)


def _remove_stale(images: tuple[str, ...]) -> None:
    """The seeds of the same images made of other ids (an image rebuilt since); one in use stays."""
    fmt = f'{{{{.Name}}}} {{{{.Label "{SEED_LABEL}"}}}}'
    for row in docker("volume", "ls", "--filter", f"label={SEED_LABEL}", "--format", fmt).stdout.splitlines():
        name, _, held = row.partition(" ")
        if held == " ".join(images):
            docker("volume", "rm", name)
