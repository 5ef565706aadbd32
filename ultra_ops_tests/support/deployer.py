"""A second machine that deploys: an operator's laptop beside the platform, running ultra_ops too.

A container on the fleet's network (an address and a machine name of its own, a network that a test
can cut) from the test host image, which carries python3 (the same 3.11 as ours) and the ssh client.
It runs this very ultra_ops: the source tree and our virtualenv's packages are mounted read-only and
put on its PYTHONPATH, and the test's folder (config, key, known_hosts) is mounted at the same path,
so one config file names the same files on both machines. Labelled with the fleet's id: the fleet's
`remove` takes it away with the hosts.
"""

from __future__ import annotations

import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import ultra_ops
from ultra_ops_tests.support.hosts import HostFleet, docker, host_image

SOURCE = Path(ultra_ops.__file__).resolve().parents[1]  # the tree holding ultra_ops and ultra_ops_tests
_SOURCE_IN = "/opt/ultra-ops-src"
_PACKAGES_IN = "/opt/ultra-ops-packages"
_ADDRESS_INDEX = 200  # far from the hosts' addresses (.10, .11, ...)


@dataclass
class Deployer:
    fleet: HostFleet
    container: str
    address: str

    @property
    def machine(self) -> str:
        """Its machine name, as a lock holder's record names it."""
        return self.container

    def popen(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start `argv` on this machine with this ultra_ops importable; pipes to stdin, stdout, stderr."""
        variables = {"PYTHONPATH": f"{_SOURCE_IN}:{_PACKAGES_IN}", "HOME": "/root", **(env or {})}
        flags = [item for key, value in variables.items() for item in ("--env", f"{key}={value}")]
        return subprocess.Popen(
            ["docker", "exec", "-i", "--workdir", "/tmp", *flags, self.container, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = self.popen(*argv, env=env)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    def kill(self, pid: int) -> None:
        """kill -9 a process of this machine, as a crash does."""
        docker("exec", self.container, "kill", "-9", str(pid), check=True)

    def cut(self) -> None:
        """Take this machine off the network: its ssh sessions hear nothing more."""
        docker("network", "disconnect", "--force", self.fleet.network, self.container, check=True)


def start_deployer(fleet: HostFleet, shared: Path) -> Deployer:
    """The second machine on `fleet`'s network (made with the first host), `shared` mounted at the
    same path on it."""
    if not fleet.network:
        raise RuntimeError("add a host to the fleet first: the deployer joins its network")
    base = fleet.subnet.rsplit(".", 1)[0]
    deployer = Deployer(fleet, f"uo-deployer-{fleet.id}", f"{base}.{_ADDRESS_INDEX}")
    packages = sysconfig.get_paths()["purelib"]
    docker(
        "run",
        "--detach",
        "--name",
        deployer.container,
        "--hostname",
        deployer.container,
        "--label",
        fleet.label,
        "--network",
        fleet.network,
        "--ip",
        deployer.address,
        "--volume",
        f"{SOURCE}:{_SOURCE_IN}:ro",
        "--volume",
        f"{packages}:{_PACKAGES_IN}:ro",
        "--volume",
        f"{shared}:{shared}",
        "--entrypoint",
        "sleep",
        host_image(),
        "infinity",
        check=True,
    )
    return deployer
