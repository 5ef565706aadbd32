"""Test hosts: machines of the test's own, reached over SSH, each with its own Docker engine.

Containers of the local image `ultra-local/host` (deploy/images/host: sshd with key auth only and a
Docker engine of its own) on a network of the test's own with fixed addresses, as Kamal's
integration tests make theirs. A `HostFleet` owns, per test:
- an SSH key pair made for the test (the public half is authorized on every host);
- a known_hosts file of the test's own, holding each host's ed25519 key read from the container
  itself (out of band, as an operator copies it), never learnt by connecting;
- the network (a /24 no other test holds: dockerd refuses overlapping subnets, so two tests that
  pick the same one cannot both get it), the hosts and their /var/lib/docker volumes,
all labelled with the fleet's id and removed by `remove` (by label, so also what a failing test
left half made). What a test process killed before its finalizer ran left behind (labelled with
that process as owner) is removed by the next fleet made on this machine once the owner is gone.
A host can start with images of this machine already in its engine (`add(images=...)`: its volume
a copy of a seed made once per machine, support/host_seeds.py) instead of loading them over ssh.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ultra_ops_tests.support.host_container import FLEET_LABEL, HOST_FLAGS, OWNER_LABEL, docker, docker_load

if TYPE_CHECKING:
    from ultra_ops.engine.hosts.ssh import SshHost
    from ultra_ops.engine.settings.host import HostSettings

_DOCKER_S = 60
_READY_S = 60
# Subnets the test networks are picked from: away from dockerd's default pools (172.17-31/16,
# 192.168/16), from other tests' fixed ranges, and from loopback.
_SUBNET_PREFIX = "10.231"
_FIRST_HOST = 10


def host_image() -> str:
    """The test host image, built once per machine (a few minutes the first time): by the first test
    process that asks, the others waiting for it (ensure_images alone has no lock: four xdist
    workers asking at once built it up to four times)."""
    from ultra_ops.local_images.images import HOST_RECIPE, ensure_images
    from ultra_ops_tests.support.machine_lock import machine_lock

    with machine_lock("local-images"):
        ensure_images(recipes=(HOST_RECIPE,))
    return HOST_RECIPE.alias


def make_key(folder: Path, name: str = "id_ed25519") -> Path:
    """A new ed25519 key pair without a passphrase in `folder`; returns the private key's path."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"ultra-ops-test-{name}", "-f", str(key)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return key


@dataclass
class TestHost:
    """One machine: `address` on the fleet's network, sshd on port 22, its own Docker engine."""

    __test__ = False  # not a pytest test class

    fleet: HostFleet
    index: int
    container: str
    address: str
    volume: str

    @property
    def known_hosts(self) -> Path:
        return self.fleet.known_hosts

    @property
    def identity(self) -> Path:
        return self.fleet.identity

    def ssh_argv(self, user: str = "root", *, identity: Path | None = None, port: int = 22) -> list[str]:
        """`ssh` to this host as the product would call it: no prompt, the test's known_hosts only."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "ServerAliveInterval=2",
            "-o",
            "ServerAliveCountMax=2",
            "-o",
            "LogLevel=ERROR",
            "-i",
            str(identity or self.identity),
            "-p",
            str(port),
            f"{user}@{self.address}",
        ]

    def ssh(
        self, *command: str, user: str = "root", input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` (one shell line, as ssh sends it) on the host; the test reads the result."""
        return subprocess.run(
            [*self.ssh_argv(user), "--", *command], input=input, capture_output=True, text=True, timeout=timeout
        )

    def settings(
        self, *, user: str = "root", port: int = 22, identity: Path | None = None, connect_timeout_s: float = 5.0
    ) -> HostSettings:
        """The `[environments.X.host]` of an environment living on this host."""
        from ultra_ops.engine.settings.host import HostSettings

        return HostSettings(
            address=self.address,
            user=user,
            port=port,
            identity_file=identity or self.identity,
            known_hosts=self.known_hosts,
            connect_timeout_s=connect_timeout_s,
        )

    def remote(self, environment: str = "staging", **settings: Any) -> SshHost:
        """The product's view of this host: what ultra_ops runs its commands through."""
        from ultra_ops.engine.hosts.ssh import SshHost

        return SshHost(environment, self.settings(**settings))

    def image_id(self, tag: str) -> str:
        """The id of the host's image `tag`; "" when it has none."""
        done = self.ssh("docker", "image", "inspect", "--format", "{{.Id}}", tag)
        return done.stdout.strip() if done.returncode == 0 else ""

    def served_version(self, port: int) -> str:
        """The version the backend on the host's loopback `port` answers with (it publishes nowhere
        else), through a tunnel of the test's own."""
        import httpx

        from ultra_ops.engine.hosts.tunnel import Tunnel

        with Tunnel(self.remote(), port) as tunnel:
            return httpx.get(f"http://127.0.0.1:{tunnel.local_port}/health", timeout=10).json()["version"]

    def exec(self, *command: str, timeout: float = _DOCKER_S) -> subprocess.CompletedProcess[str]:
        """Run `command` in the host's container, beside sshd (not over the network)."""
        return docker("exec", self.container, *command, timeout=timeout)

    def host_key(self) -> str:
        """The host's ed25519 public key (`ssh-ed25519 AAAA...`), read from the container itself."""
        proc = self.exec("cat", "/etc/ssh/ssh_host_ed25519_key.pub")
        if proc.returncode != 0:
            raise RuntimeError(f"{self.container} has no host key: {proc.stderr.strip()}")
        kind, blob = proc.stdout.split()[:2]
        return f"{kind} {blob}"

    def regenerate_host_key(self) -> None:
        """A new host key, as a reinstalled (or impersonated) machine has; sshd reloads it (SIGHUP)
        and the test's known_hosts keeps the old one."""
        old = self.host_key()
        script = (
            "rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub"
            " && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && kill -HUP 1"
        )
        proc = self.exec("sh", "-c", script)
        if proc.returncode != 0 or self.host_key() == old:
            raise RuntimeError(f"could not regenerate the host key of {self.container}: {proc.stderr.strip()}")
        self.fleet.wait_listening(self)

    def cut(self) -> None:
        """Take the host off the network, as an outage does: packets to it go nowhere."""
        docker("network", "disconnect", "--force", self.fleet.network, self.container, check=True)

    def restore(self) -> None:
        """Put the host back on the network at its address."""
        docker("network", "connect", "--ip", self.address, self.fleet.network, self.container, check=True)

    def load_image(self, image: str, timeout: float = 300) -> None:
        """`docker save IMAGE | ssh HOST docker load`: an image of this machine into the host's engine."""
        load = docker_load([*self.ssh_argv(), "--", "docker", "load"], (image,), timeout=timeout)
        if load.returncode != 0:
            raise RuntimeError(f"loading {image} into {self.container} failed: {load.stderr.strip()[-500:]}")


@dataclass
class HostFleet:
    """The test's hosts, network, key and known_hosts; `remove` takes all of it away."""

    folder: Path
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    hosts: list[TestHost] = field(default_factory=list)
    network: str = ""
    subnet: str = ""
    image: str = ""

    def __post_init__(self) -> None:
        sweep_abandoned()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.identity = make_key(self.folder / "ssh")
        self.known_hosts = self.folder / "ssh" / "known_hosts"
        self.known_hosts.write_text("")

    @property
    def label(self) -> str:
        return f"{FLEET_LABEL}={self.id}"

    @property
    def labels(self) -> list[str]:
        """`--label` arguments for everything the fleet makes: its id and its owner."""
        return ["--label", self.label, "--label", f"{OWNER_LABEL}={socket.gethostname()}:{os.getpid()}"]

    def add(self, count: int = 1, *, volumes: tuple[str, ...] = (), images: tuple[str, ...] = ()) -> list[TestHost]:
        """Start `count` more hosts (started together, then waited for); each answers ssh when returned.
        `volumes`: more `docker run --volume` values (`SRC:DST[:ro]`), e.g. to run this ultra_ops there.
        `images`: images of this machine each host's engine has from its start (its volume a copy of
        a seed holding them, support/host_seeds.py), as if `load_image` had brought them."""
        if not self.network:
            self._create_network()
        if not self.image:
            self.image = host_image()
        seed = ""
        if images:
            from ultra_ops_tests.support.host_seeds import seed_volume

            seed = seed_volume(self.image, images)
        first = len(self.hosts)  # _start appends each host as it starts it
        new = [self._start(first + i, volumes, seed) for i in range(count)]
        for host in new:
            self.wait_listening(host)
            self.trust(host)
        return new

    def load_images(self, *images: str, hosts: list[TestHost] | None = None) -> None:
        """`load_image` of each image into each host (all of them unless `hosts`), the hosts in
        parallel: each one's engine writes its own layers."""
        from concurrent.futures import ThreadPoolExecutor

        targets = self.hosts if hosts is None else hosts
        with ThreadPoolExecutor(max_workers=len(targets) or 1) as pool:
            loads = [pool.submit(lambda h: [h.load_image(i) for i in images], h) for h in targets]
            for load in loads:
                load.result()

    def trust(self, host: TestHost) -> None:
        """Write the host's current key into the test's known_hosts (replacing what it had)."""
        lines = [line for line in self.known_hosts.read_text().splitlines() if line.split(" ", 1)[0] != host.address]
        lines.append(f"{host.address} {host.host_key()}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def _create_network(self) -> None:
        name = f"uo-hosts-{self.id}"
        tried = random.sample(range(256), 40)
        for third in tried:
            subnet = f"{_SUBNET_PREFIX}.{third}.0/24"
            proc = docker("network", "create", "--subnet", subnet, *self.labels, name)
            if proc.returncode == 0:
                self.network, self.subnet = name, subnet
                return
            if "overlap" not in proc.stderr:
                raise RuntimeError(f"docker network create failed: {proc.stderr.strip()}")
        raise RuntimeError(f"no free subnet under {_SUBNET_PREFIX}.0.0/16 after {len(tried)} tries")

    def _start(self, index: int, volumes: tuple[str, ...] = (), seed: str = "") -> TestHost:
        base = self.subnet.rsplit(".", 1)[0]
        host = TestHost(
            fleet=self,
            index=index,
            container=f"uo-host-{self.id}-{index}",
            address=f"{base}.{_FIRST_HOST + index}",
            volume=f"uo-host-{self.id}-{index}-docker",
        )
        self.hosts.append(host)  # before it exists: `remove` must find what a failed start left
        docker("volume", "create", *self.labels, host.volume, check=True)
        if seed:
            from ultra_ops_tests.support.host_seeds import fill_volume

            fill_volume(seed, host.volume, self.image, name=f"{host.container}-seed", labels=self.labels)
        public = self.identity.with_suffix(".pub").read_text().strip()
        docker(
            "run",
            "--detach",
            "--name",
            host.container,
            "--hostname",
            host.container,
            *self.labels,
            "--network",
            self.network,
            "--ip",
            host.address,
            "--volume",
            f"{host.volume}:/var/lib/docker",
            *[flag for volume in volumes for flag in ("--volume", volume)],
            "--env",
            f"SSH_AUTHORIZED_KEYS={public}",
            *HOST_FLAGS,
            self.image,
            check=True,
        )
        return host

    def wait_listening(self, host: TestHost, timeout: float = _READY_S) -> None:
        """Until sshd accepts connections (the entrypoint starts it after the Docker engine answers)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((host.address, 22), timeout=1) as conn:
                    conn.settimeout(2)
                    if conn.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                logs = docker("logs", "--tail", "20", host.container).stderr.strip()
                raise RuntimeError(f"{host.container} did not answer ssh within {timeout:g}s: {logs[-800:]}")
            running = docker("inspect", "--format", "{{.State.Running}}", host.container).stdout.strip()
            if running == "false":
                logs = docker("logs", "--tail", "20", host.container).stderr.strip()
                raise RuntimeError(f"{host.container} stopped while starting: {logs[-800:]}")
            time.sleep(0.1)

    def remove(self) -> None:
        """Containers (with everything running inside them), volumes and network, by label."""
        remove_fleet(self.id)


def remove_fleet(fleet_id: str) -> None:
    label = f"label={FLEET_LABEL}={fleet_id}"
    ids = docker("ps", "-aq", "--filter", label).stdout.split()
    if ids:
        docker("rm", "--force", "--volumes", *ids, timeout=180)
    volumes = docker("volume", "ls", "-q", "--filter", label).stdout.split()
    if volumes:
        docker("volume", "rm", "--force", *volumes, timeout=180)
    networks = docker("network", "ls", "-q", "--filter", label).stdout.split()
    if networks:
        docker("network", "rm", *networks, timeout=60)


def sweep_abandoned() -> None:
    """Remove the fleets whose test process (on this machine) is gone without removing them."""
    fmt = f'{{{{.Label "{FLEET_LABEL}"}}}} {{{{.Label "{OWNER_LABEL}"}}}}'
    rows: set[str] = set()
    for kind in (["ps", "-a"], ["volume", "ls"], ["network", "ls"]):
        rows |= set(docker(*kind, "--filter", f"label={FLEET_LABEL}", "--format", fmt).stdout.splitlines())
    for row in rows:
        fleet_id, _, owner = row.partition(" ")
        machine, _, pid = owner.rpartition(":")
        if fleet_id and machine == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            remove_fleet(fleet_id)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def host_config(
    tmp_path: Path,
    host: TestHost,
    *,
    environment: str = "staging",
    connect_timeout_s: float = 5,
    compose: str = 'version: "3.8"\nservices: {}\n',
    env_file: str = "ULTRA_VERSION=v1.0.0\n",
) -> Path:
    """A config whose compose environment lives on `host` (its [host] table: the fleet's key and
    known_hosts), its folders here, and the env file and compose file (no services unless given)
    that the compose runtime copies to the host's /srv/ultra-ops/<environment>."""
    root = tmp_path / "root"
    root.mkdir(parents=True, exist_ok=True)
    (root / "compose.yml").write_text(compose)
    (root / f".env.{environment}").write_text(env_file)
    config = tmp_path / "ultra_ops.toml"
    config.write_text(f"""
timezone = "UTC"
[environments.{environment}]
runtime = "compose"
root = "{root}"
compose_file = "compose.yml"
compose_project = "uo-{host.fleet.id}"
compose_command = ["docker-compose"]
state_dir = "{tmp_path / "state"}"
log_dir = "{tmp_path / "logs"}"
backup_dir = "{tmp_path / "backups"}"
[environments.{environment}.database]
host = "{host.address}"
port = 5432
name = "ultra_{environment}"
user = "ultra"
[environments.{environment}.host]
address = "{host.address}"
user = "deploy"
identity_file = "{host.identity}"
known_hosts = "{host.known_hosts}"
connect_timeout_s = {connect_timeout_s}
""")
    return config


def host_table(host: TestHost, *, connect_timeout_s: float = 5) -> str:
    """The `[host]` keys of an environment living on `host`: the fleet's key and known_hosts."""
    return (
        f'address = "{host.address}"\nuser = "deploy"\nidentity_file = "{host.identity}"\n'
        f'known_hosts = "{host.known_hosts}"\nconnect_timeout_s = {connect_timeout_s}\n'
    )


def ssh_clients_to(address: str) -> list[str]:
    """The command lines of ssh clients on this machine connected (or connecting) to `address`:
    what a command must not leave running (a tunnel it did not close)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode("utf-8", "replace") for a in argv if a]
        if words and Path(words[0]).name == "ssh" and address in words and not _ending(entry):
            found.append(" ".join(words))
    return found


def _ending(proc: Path) -> bool:
    """Whether the process is already on its way out: a zombie, or killed (SIGKILL pending) and not
    yet scheduled to die, which a busy machine can take a moment to do after its group was killed."""
    try:
        status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
    except OSError:
        return True
    if status.get("State", "").strip()[:1] in ("Z", "X"):
        return True
    sigkill = 1 << (9 - 1)
    return any(int(status.get(key, "0").strip() or "0", 16) & sigkill for key in ("SigPnd", "ShdPnd"))


def three_environment_config(
    tmp_path: Path, staging: TestHost, production: TestHost, *, database: str, redis_prefix: str
) -> dict[str, Any]:
    """The shipped promotion path on hosts: development on this machine (the process runtime, the
    sample service on a free port, `database` on the test server, Redis keys under
    `redis_prefix`), staging and production of the local compose config, each on a host of its
    own (its ports those of the host's loopback, reached through tunnels). Returns
    {"config": Path, "staging": ComposeEnvironment, "production": ComposeEnvironment}: the two
    share the config, the stand-in repository and the list of backend tags to remove after."""
    import sys

    from ultra_ops_tests.support.docker import ComposeEnvironment, compose_environment
    from ultra_ops_tests.support.ports import free_port
    from ultra_ops_tests.support.services import PG, REDIS_URL

    on_staging = compose_environment(tmp_path, "staging", host=host_table(staging))
    on_production = ComposeEnvironment(
        on_staging.config,
        "production",
        f"{on_staging.project}-other",  # compose_environment's name for the other environment
        on_staging.repo,
        {"backend": 8102, "postgres": 5502, "redis": 6502, "major": on_staging.ports["major"]},
        versions=on_staging.versions,
    )
    port, folder = free_port(), tmp_path / "development"
    (folder / "root").mkdir(parents=True)
    api = f"http://127.0.0.1:{port}/api/v1"
    with on_staging.config.open("a") as config:
        config.write(f"""
[environments.production.host]
{host_table(production)}
[environments.development]
runtime = "process"
root = "{folder / "root"}"
log_dir = "{folder / "logs"}"
state_dir = "{folder / "state"}"
required_env_keys = ["ULTRA_VERSION"]

[environments.development.database]
host = "{PG["host"]}"
port = {PG["port"]}
name = "{database}"
user = "{PG["user"]}"
probe_queries = ["SELECT 1", "SELECT count(*) FROM prompts"]

[environments.development.redis]
url = "{REDIS_URL}"

[environments.development.processes.backend]
command = ["{sys.executable}", "-m", "ultra_ops.sample_service"]
port = {port}
health_url = "http://127.0.0.1:{port}/health"
env = {{ ULTRA_REDIS_PREFIX = "{redis_prefix}development:" }}

[environments.development.verify]
timeout_s = 3
retries = 1
backoff_s = 0.1
health_urls = ["http://127.0.0.1:{port}/health?detail=true"]
endpoints = [{{ name = "version", url = "{api}/version" }}]
""")
    return {"config": on_staging.config, "staging": on_staging, "production": on_production}
