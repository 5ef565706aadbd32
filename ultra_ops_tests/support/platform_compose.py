"""The repository's docker-compose.yml (webserver, daemon, code server, dagster-postgres, the socket
proxies) run on this machine's dockerd for a test: the locally built images through the file's
variables, a project name, webserver port and network names of the test's own, and
`docker-compose down -v` at the end, also when the test fails."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ultra_ops_tests.support.docker import docker
from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
_UP_S = 240
_DOWN_S = 120


@dataclass
class PlatformCompose:
    image: str  # the ultra_ops image (ultra_ops.local_images.platform)
    config: Path | None = None  # ULTRA_OPS_CONFIG, under /srv/ultra-ai; the image's shipped example when None
    project: str = field(default_factory=lambda: f"ultra-platform-{uuid.uuid4().hex[:8]}")
    port: int = field(default_factory=free_port)

    @property
    def networks(self) -> dict[str, str]:
        return {
            "ULTRA_OPS_PLATFORM_NETWORK": f"{self.project}-platform",
            "ULTRA_OPS_LAUNCHER_NETWORK": f"{self.project}-launcher",
            "ULTRA_OPS_DEPLOY_NETWORK": f"{self.project}-deploy",
        }

    def __post_init__(self) -> None:
        from ultra_ops.local_images.images import image_variables

        # Passwords of the test's own, never printed: the stack refuses to start without them.
        self.variables = {
            **image_variables(),
            **self.networks,
            "ULTRA_OPS_IMAGE": self.image,
            "DAGSTER_WEBSERVER_PORT": str(self.port),
            **({"ULTRA_OPS_CONFIG": str(self.config)} if self.config else {}),
            "DAGSTER_PG_PASSWORD": secrets.token_hex(12),
            **{
                f"ULTRA_{env}_{kind}_PASSWORD": secrets.token_hex(12)
                for env in ("PROD", "STAGING")
                for kind in ("DB", "REDIS")
            },
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = _UP_S, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.variables}
        proc = subprocess.run(
            ["docker-compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=REPO,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed: {proc.stderr[-2000:]}")
        return proc

    def wait_webserver(self, timeout: float = _UP_S) -> None:
        """Until the webserver answers /server_info (docker-compose up -d returns before it does)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/server_info", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the webserver did not answer within {timeout} s:\n{self.logs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", timeout=60, check=False).stdout[-6000:]

    def run_containers(self) -> list[str]:
        """Containers on the stack's platform network that are not its services: run containers."""
        out = docker("ps", "-aq", "--filter", f"network={self.networks['ULTRA_OPS_PLATFORM_NETWORK']}").stdout.split()
        return [c for c in out if not self._is_service(c)]

    def _is_service(self, container: str) -> bool:
        labels = docker("inspect", "--format", "{{json .Config.Labels}}", container).stdout.strip()
        return json.loads(labels or "{}").get("com.docker.compose.project") == self.project

    def leftovers(self) -> list[str]:
        """What of this stack is still on the engine: containers, volumes, networks."""
        label = f"label=com.docker.compose.project={self.project}"
        found = docker("ps", "-aq", "--filter", label).stdout.split()
        found += docker("volume", "ls", "-q", "--filter", label).stdout.split()
        for name in self.networks.values():
            found += docker("network", "ls", "-q", "--filter", f"name=^{name}$").stdout.split()
        return found

    def down(self) -> None:
        # A run container still attached would keep the platform network from being removed.
        for container in self.run_containers():
            docker("rm", "-f", container)
        self.compose("down", "-v", "--remove-orphans", "-t", "10", timeout=_DOWN_S, check=False)


# dagster.yaml mounts it into every run container at the same path, docker-compose.yml into the code
# server; dockerd creates it (empty) on a host without it.
RUN_MOUNT = Path("/srv/ultra-ai")


@contextmanager
def platform_compose(image: str, config: Path | None = None) -> Iterator[PlatformCompose]:
    stack = PlatformCompose(image, config)
    made_mount = not RUN_MOUNT.exists()
    try:
        stack.compose("up", "-d", "--no-build")
        stack.wait_webserver()
        yield stack
    finally:
        stack.down()
        if made_mount and RUN_MOUNT.is_dir() and not any(RUN_MOUNT.iterdir()):
            RUN_MOUNT.rmdir()
