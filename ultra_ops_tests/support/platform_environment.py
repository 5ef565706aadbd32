"""A compose environment that the platform stack's run containers operate, laid out as an operator
lays one out beside the platform on one host (README: "Ultra AI beside the platform"):

- under /srv/ultra-ai (a folder of the test's own in it), which dagster.yaml mounts into every run
  container at the same path, so the config, the compose and env files, the backups and the Ultra AI
  checkout have one path on the host, in the code server and in the run container (the Docker
  engine resolves a compose file's paths on the host);
- its backend, PostgreSQL and Redis published on the Docker bridge's gateway address, which the host
  and the run containers both reach, and named by that address in the config;
- handed to the image's user (uid 10001) once the host has prepared it, env files staying 0600.

Removed after (`docker-compose down -v`, its folder), also when the test fails."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from ultra_ops_tests.support.docker import ComposeEnvironment, compose_environment, docker
from ultra_ops_tests.support.platform_compose import RUN_MOUNT
from ultra_ops_tests.support.services import REPO

RUN_UID = 10001  # the ultra_ops image's user


def bridge_gateway() -> str:
    """The default bridge's address on the host (172.17.0.1 unless dockerd's `bip` says otherwise):
    where a container's traffic to the host arrives."""
    out = docker("network", "inspect", "--format", "{{json .}}", "bridge").stdout
    found = json.loads(out)
    gateways = [c["Gateway"] for c in found["IPAM"]["Config"] if "." in c.get("Gateway", "")]
    if gateways:
        return gateways[0]
    # dockerd leaves it out of the default bridge's IPAM when it chose it itself: the interface has it.
    name = found["Options"].get("com.docker.network.bridge.name", "docker0")
    addr = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", name], capture_output=True, text=True, timeout=10)
    return addr.stdout.split("inet ", 1)[1].split("/", 1)[0]


@contextmanager
def platform_environment(environment: str = "staging") -> Iterator[ComposeEnvironment]:
    made_home = not RUN_MOUNT.exists()
    base = RUN_MOUNT / f"uo-test-{uuid.uuid4().hex[:10]}"
    base.mkdir(parents=True)
    env: ComposeEnvironment | None = None
    try:
        env = compose_environment(base, environment)
        # The sample service's migrations and tests, where the run container finds them too.
        shutil.copytree(REPO / "ultra_ops" / "sample_service", base / "ultra_ops" / "sample_service")
        address = bridge_gateway()
        text = env.config.read_text().replace(f"{REPO}/ultra_ops/", f"{base}/ultra_ops/")
        text = text.replace("127.0.0.1", address)
        shipped = 'ULTRA_REDIS_IMAGE = "ultra-local/redis:7" }'
        assert shipped in text, "deploy/ultra_ops.compose-local.toml's compose_env changed"
        text = text.replace(
            shipped,
            f'ULTRA_REDIS_IMAGE = "ultra-local/redis:7", ULTRA_BIND_ADDRESS = "{address}", '
            f'ULTRA_STORES_BIND_ADDRESS = "{address}" }}',
        )
        env.config.write_text(text)
        env.address = address
        yield env
    finally:
        if env is not None:
            env.remove()
        shutil.rmtree(base, ignore_errors=True)
        if made_home:
            with contextlib.suppress(OSError):  # another test's folder came meanwhile: it stays
                RUN_MOUNT.rmdir()


def hand_over(env: ComposeEnvironment) -> None:
    """Everything of the environment to the run containers' user, as an operator chowns /srv/ultra-ai
    once the host has prepared it: the env files stay 0600, readable by that user alone."""
    base = env.config.parent
    for folder, dirs, files in os.walk(base):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.lchown(name, RUN_UID, RUN_UID)


def build_backend(env: ComposeEnvironment, version: str) -> None:
    """`ultra-ai/backend:<version>` built on the host from the release's commit, as a deploy builds it:
    what a deploy with skip_build then runs."""
    from ultra_ops.engine.release.source import release_source
    from ultra_ops.engine.runtimes.compose import ComposeRuntime
    from ultra_ops.engine.secrets import NullLog
    from ultra_ops.engine.settings import load_settings

    settings = load_settings(env.config).environment(env.environment)
    with release_source(settings, version, log=NullLog()) as source:
        ComposeRuntime(settings).build(version, context=source)
