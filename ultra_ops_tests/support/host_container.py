"""What a test host's container is made of, below the fleet (support/hosts.py) and the seeds of its
engine (support/host_seeds.py), which both use it: its labels, the flags it runs with, and the
docker commands that make and fill it. `--privileged` cannot be used here; HOST_FLAGS are the
capabilities that work instead (../shared/DOCKER_NOTES.md)."""

from __future__ import annotations

import subprocess

_DOCKER_S = 60
FLEET_LABEL = "org.ultra-ops.test-hosts"
OWNER_LABEL = "org.ultra-ops.test-hosts.owner"  # <machine>:<pid> of the test process that made it
HOST_FLAGS = (
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--security-opt",
    "systempaths=unconfined",
    "--device-cgroup-rule",
    "a *:* rwm",
)


def docker(*args: str, timeout: float = _DOCKER_S, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {args[0]} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc


def docker_load(argv: list[str], images: tuple[str, ...], *, timeout: float) -> subprocess.CompletedProcess[str]:
    """`docker save IMAGES | ARGV`, ARGV a `docker load` somewhere (over ssh, in a container): its
    result, with a failed save reported as its failure."""
    save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        load = subprocess.run(argv, stdin=save.stdout, capture_output=True, text=True, timeout=timeout)
    finally:
        assert save.stdout is not None
        save.stdout.close()
        try:
            save.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            save.kill()
            save.wait()
        assert save.stderr is not None
        said = save.stderr.read().decode(errors="replace")
        save.stderr.close()
    if save.returncode != 0:
        return subprocess.CompletedProcess(argv, save.returncode or 1, load.stdout, f"docker save: {said}")
    return load
