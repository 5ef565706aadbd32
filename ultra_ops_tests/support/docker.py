"""The Docker tier's helpers: whether Docker can run here (and the one line saying why not), and a
compose environment of the test's own made from deploy/ultra_ops.compose-local.toml: its own
project name, free published ports, folders, stand-in repository and versions, all removed after
(`docker-compose down -v`, the backend images it built), also when the test fails."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import httpx

from ultra_ops_tests.support.ports import free_port
from ultra_ops_tests.support.services import REPO

LOCAL_CONFIG = REPO / "deploy" / "ultra_ops.compose-local.toml"
_DOCKER_S = 60


@cache
def docker_unavailable() -> str | None:
    """None when dockerd answers, compose v1 is installed and the local images are built (they are
    built here if missing, once per machine); else why not, in one line."""
    reason = os.environ.get("ULTRA_DOCKER_UNAVAILABLE")
    if reason:
        return reason
    for program in ("docker", "docker-compose"):
        if shutil.which(program) is None:
            return f"{program} is not installed (./dev test installs it as root with apt-get)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=_DOCKER_S)
    except subprocess.TimeoutExpired:
        return "docker info did not answer within a minute"
    if info.returncode != 0:
        return "dockerd is not answering (./dev test starts it as root)"
    from ultra_ops.engine.errors import UltraOpsError
    from ultra_ops.local_images.images import ensure_images
    from ultra_ops_tests.support.machine_lock import machine_lock

    try:
        with machine_lock("local-images"):  # one test process builds them, the others wait
            ensure_images()
    except UltraOpsError as exc:
        return f"the local images could not be built: {str(exc)[:200]}"
    return None


def docker(*args: str, timeout: float = _DOCKER_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def image_id(tag: str) -> str:
    """The id of this machine's image `tag`; "" when there is none."""
    done = docker("image", "inspect", "--format", "{{.Id}}", tag)
    return done.stdout.strip() if done.returncode == 0 else ""


@dataclass
class ComposeEnvironment:
    """One environment of the local compose config, moved into the test's folder."""

    config: Path
    environment: str
    project: str
    repo: Path
    ports: dict[str, int]
    versions: list[str] = field(default_factory=list)  # backend tags the test built, removed after
    address: str = "127.0.0.1"  # where its ports are published and the config reaches them

    @property
    def root(self) -> Path:
        return self.config.parent / "compose" / self.environment

    @property
    def env_file(self) -> Path:
        return self.root / f".env.{self.environment}"

    @property
    def compose_file(self) -> Path:
        return self.root / "deploy" / "ultra-ai.compose.yml"

    def compose(
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        base = ["docker-compose", "-f", str(self.compose_file), "-p", self.project, "--env-file", str(self.env_file)]
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
        )

    def version(self, minor: int) -> str:
        """A version no other test uses (the backend image's tag is shared by the whole engine)."""
        return f"v{self.ports['major']}.{minor}.0"

    def container(self, service: str) -> str:
        """The service's container: the running one, else the newest (a rollback's restart makes the
        backend's successor beside it, so its number is not always 1)."""
        listed = docker(
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            "--format",
            "{{.Names}}\t{{.State}}",
        ).stdout.split("\n")
        found = [line.split("\t") for line in listed if line.strip()]
        running = [name for name, state in found if state == "running"]
        if not found:
            # None on this engine: the project runs on a host of its own, where a first deploy's
            # container has compose's first name.
            return f"{self.project}_{service}_1"
        return (running or [found[0][0]])[0]

    def conninfo(self) -> dict:
        """psycopg's arguments for the project's PostgreSQL, as ultra_ops reaches it: the config's
        database table, its password read from the env file (password_key)."""
        from ultra_ops.engine.settings import load_settings

        return load_settings(self.config).environment(self.environment).database.conninfo()

    def remove(self) -> None:
        if self.compose_file.is_file() and self.env_file.is_file():
            self.compose("down", "-v", "--remove-orphans", "-t", "5", timeout=180)
        # Whatever the compose file could not name any more (a file the test broke): by label.
        ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}").stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, timeout=120)
        volumes = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}")
        if volumes.stdout.split():
            docker("volume", "rm", "-f", *volumes.stdout.split(), timeout=120)
        tags = [f"ultra-ai/backend:{v}" for v in self.versions]
        # Also as built for a registry: a build names the image with the registry's address before
        # pushing it, and a push that failed (test_compose_faults' unreachable registry) left a tag
        # no registry's cleanup removes.
        pushed = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        tags += [t for t in pushed if any(t.endswith(f"/ultra-ai/backend:{v}") for v in self.versions)]
        if tags:
            docker("rmi", "-f", *tags, timeout=120)


def compose_release(env: ComposeEnvironment, minor: int) -> str:
    """A release as the calendar makes one: the changelog on main names it, then its branch; its
    backend image is removed with the environment."""
    from ultra_ops.cli import main
    from ultra_ops.demo_calendar import plan_release

    version = env.version(minor)
    plan_release(env.repo, version)
    if main(["release-branch", "--tag", version, "--config", str(env.config)]) != 0:
        raise RuntimeError(f"release-branch {version} failed")
    env.versions.append(version)
    return version


def compose_environment(tmp_path: Path, environment: str = "staging", host: str = "") -> ComposeEnvironment:
    """deploy/ultra_ops.compose-local.toml with the test's folders, stand-in repository, project
    name and free ports; the stand-in repository made as `ultra-ops demo` makes it. `host`: the
    keys of the environment's `[host]` table, which puts it on a host of its own."""
    from ultra_ops.demo_calendar import ensure_repository

    repo = tmp_path / "ultra-ai"
    ensure_repository(repo)
    project = f"uo-test-{uuid.uuid4().hex[:10]}"
    ports = {"backend": free_port(), "postgres": free_port(), "redis": free_port(), "major": random.randint(100, 99999)}
    other = "production" if environment == "staging" else "staging"
    text = LOCAL_CONFIG.read_text()
    shipped = {"staging": (8101, 5501, 6501), "production": (8102, 5502, 6502)}[environment]
    for old, new in zip(shipped, (ports["backend"], ports["postgres"], ports["redis"]), strict=True):
        text = text.replace(str(old), str(new))
    text = (
        text.replace("../var/compose", str(tmp_path / "compose"))
        .replace("../var/ultra-ai", str(repo))
        .replace("../ultra_ops/", f"{REPO}/ultra_ops/")
        .replace(f'"ultra-local-{environment}"', f'"{project}"')
        .replace(f'"ultra-local-{other}"', f'"{project}-other"')
        # The shipped p95 budget is a served machine's; here six test workers share two cores, and
        # a backend just started behind a tunnel has answered its first requests in 600 ms. These
        # tests are about compose and hosts: the latency check still runs, its limits are
        # tested in engine/verify.
        .replace("p95_ms = 500", "p95_ms = 3000")
    )
    if host:
        text += f"\n[environments.{environment}.host]\n{host}"
    config = tmp_path / "ultra_ops.compose-local.toml"
    config.write_text(text)
    return ComposeEnvironment(config, environment, project, repo, ports)


@dataclass
class Registry:
    """Debian's docker-registry on a free loopback port, storing under `root` (127.0.0.1 needs no
    insecure-registries setting); stopped and its pushed images' local tags removed by `stop`."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        config = self.root / "registry.yml"
        self.root.mkdir(parents=True, exist_ok=True)
        config.write_text(
            "version: 0.1\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: {self.address}}}\n"
            "log: {level: warn}\n"
        )
        log = (self.root / "registry.log").open("w")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
        for _ in range(100):
            try:
                if httpx.get(f"http://{self.address}/v2/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(
            f"docker-registry did not answer on {self.address}: {(self.root / 'registry.log').read_text()}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        tags = docker("images", "--format", "{{.Repository}}:{{.Tag}}", f"{self.address}/*/*").stdout.split()
        if tags:
            docker("rmi", "-f", *tags, timeout=120)
