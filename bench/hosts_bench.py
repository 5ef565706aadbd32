"""Benchmark: an environment on a host of its own, over SSH, against the same work done on that host.

Not part of the tests. Run:  .venv/bin/python bench/hosts_bench.py [--parts deploy,backup] [--runs 3]
                                 [--size-mb 100] [--link-mbit 0,100,1000] [--profile]

One test host (the tests' ultra_ops_tests/support/hosts.py: a container with sshd and a Docker engine
of its own, on a network of the bench's own), with this checkout and our virtualenv's packages
mounted read-only at their own paths and the bench's folder read-write at its own path, so the host
runs this same ultra_ops (its python3 is 3.11 as ours, as support/deployer.py runs it). Two compose
environments of the local compose config (support/docker.py), both named staging, each its own
project, ports, folders and Dagster home, both on that host's engine:
- "ssh": the config has `[environments.staging.host]`: ultra_ops runs HERE and reaches the host
  over SSH (compose over ssh, tunnels to the host's loopback);
- "on-host": no host table: ultra_ops runs ON the host (`docker exec HOST python3 -m ultra_ops.cli`),
  its docker-compose and the stores on the host's own engine and loopback.
Both back up in custom format (a hosted environment's only format) so the deploys do the same work.

deploy  `ultra-ops deploy --tag vN --skip-tests --skip-build` of a new version whose image is on the
        host already (a tag of the first deploy's build, made here and there untimed), "ssh" against
        "on-host"; a fresh process each, as an operator runs it. The on-host time includes `docker
        exec`'s own start (measured alone below). Ratio target: at most 1.3 (the transport's cost).
backup  a database of about --size-mb MB (a bulk table) in the "ssh" environment's PostgreSQL on the
        host: `ultra-ops backups create` here (pg_dump -Fc -Z1 in the host's postgres container,
        streamed over ssh into the backup folder here, hashed as written) against `ssh HOST docker exec
        CONTAINER pg_dump -Fc -Z1 ... > /tmp/file` on the host then `ssh HOST cat /tmp/file > here`
        (the same compression; the file removed untimed). Ratio target: at most 1.0.
        --link-mbit: the backup pairs again under each of these link rates (0: unshaped), the host's
        eth0 egress (host -> here, the dump's direction) shaped with a token bucket (`tc qdisc tbf`
        in the host container) for both sides of each pair alike. This machine's docker network is
        otherwise a memory copy, where dump-then-copy pays almost nothing for its serial copy.
        --profile: one in-process backup under cProfile first (where its wall time goes).

Each part: one warm-up pair, then --runs pairs alternating which goes first; the ratio is the median
of the pairs' ratios. Everything (host, network, volumes, images tagged here, the folder) is removed
at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from rollback_downtime_bench import fill_bulk  # noqa: E402 - the same data as the other benches

from ultra_ops.engine.backups.create import create_backup  # noqa: E402
from ultra_ops.engine.hosts.reach import Reach  # noqa: E402
from ultra_ops.engine.settings import Environment, load_settings  # noqa: E402
from ultra_ops_tests.support.docker import ComposeEnvironment, compose_environment, docker_unavailable  # noqa: E402
from ultra_ops_tests.support.hosts import HostFleet, docker, host_table  # noqa: E402

PACKAGES = sysconfig.get_paths()["purelib"]
STORES = ("ultra-local/postgres:15", "ultra-local/redis:7")
CUSTOM = '\n[environments.staging.backup]\nformat = "custom"\n'


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def timed(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800, stdout=None) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    done = subprocess.run(
        argv, env=env, cwd=REPO, timeout=timeout, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        out = done.stdout if isinstance(done.stdout, str) else ""
        raise RuntimeError(f"{' '.join(argv[:8])} ... exited {done.returncode}:\n{out[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.fleet = HostFleet(work / "hosts")
        self.envs: list[ComposeEnvironment] = []
        self.minor = 0

    def start(self) -> None:
        """The host and the two environments' configs (what `remove` takes away, also half made)."""
        work = self.work
        mounts = (f"{REPO}:{REPO}:ro", f"{PACKAGES}:{PACKAGES}:ro", f"{work}:{work}")
        [self.host] = self.fleet.add(1, volumes=mounts)
        self.fleet.load_images(*STORES)
        self.ssh = compose_environment(work / "ssh", host=host_table(self.host))
        self.envs.append(self.ssh)
        self.on_host = compose_environment(work / "on-host")
        self.envs.append(self.on_host)
        self.on_host.versions = self.ssh.versions  # one list of tags, removed once
        for env in (self.ssh, self.on_host):
            env.config.write_text(env.config.read_text() + CUSTOM)

    def here(self, *argv: str, env: ComposeEnvironment | None = None) -> list[str]:
        env = env or self.ssh
        return [sys.executable, "-m", "ultra_ops.cli", *argv, "-e", "staging", "--config", str(env.config)]

    def here_env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO), "DAGSTER_HOME": str(self.work / "dagster-ssh")}

    def there(self, *argv: str) -> list[str]:
        """`ultra-ops ARGV` run on the host. Our packages go on sys.path inside the process only: on
        PYTHONPATH they would reach the host's own docker-compose (Debian's, a python program) and
        shadow its docker library with ours."""
        variables = {"HOME": "/root", "DAGSTER_HOME": str(self.work / "dagster-on-host")}
        flags = [item for key, value in variables.items() for item in ("--env", f"{key}={value}")]
        start = (
            "import runpy, sys; sys.path[:0] = sys.argv[1:4]; del sys.argv[1:4]; "
            "runpy.run_module('ultra_ops.cli', run_name='__main__', alter_sys=True)"
        )
        return [
            "docker",
            "exec",
            "-i",
            "--workdir",
            "/tmp",
            *flags,
            self.host.container,
            "python3",
            "-c",
            start,
            str(REPO),
            PACKAGES,
            str(self.work / "shim"),
            *argv,
            "-e",
            "staging",
            "--config",
            str(self.on_host.config),
        ]

    def prepare(self, on_host: bool = True) -> str:
        """Both environments initialised and running the first release (built here, sent there);
        the on-host one only when `on_host` (the deploy part: the backup part does not use it)."""
        for home in ("dagster-ssh", "dagster-on-host", "shim"):
            (self.work / home).mkdir()
        # The host's python3 is 3.11.2: redis imports async_timeout below 3.11.3 (asyncio.timeout,
        # new in 3.11, after), which our virtualenv, made for a later 3.11, does not have.
        (self.work / "shim" / "async_timeout.py").write_text("from asyncio import timeout  # noqa: F401\n")
        first = self.version()
        from ultra_ops.demo_calendar import plan_release

        plan_release(self.ssh.repo, first)
        timed(
            [sys.executable, "-m", "ultra_ops.cli", "release-branch", "--tag", first, "--config", str(self.ssh.config)],
            env=self.here_env(),
        )
        timed(self.here("init"), env=self.here_env())
        if on_host:
            timed(self.there("init"))
        timed(self.here("deploy", "--tag", first, "--skip-tests"), env=self.here_env())
        # From here on neither needs the repository (--skip-build); the host has no git either.
        for env in (self.ssh, self.on_host):
            text = env.config.read_text()
            env.config.write_text("\n".join(line for line in text.splitlines() if not line.startswith("git_repo")))
        if on_host:
            timed(self.there("deploy", "--tag", first, "--skip-tests", "--skip-build"))
        return first

    def version(self) -> str:
        self.minor += 1
        version = self.ssh.version(self.minor)
        self.ssh.versions.append(version)
        return version

    def tag(self, built: str, version: str) -> None:
        """The built image under `version`, here and on the host (untimed)."""
        docker("tag", f"ultra-ai/backend:{built}", f"ultra-ai/backend:{version}", check=True)
        done = self.host.ssh("docker", "tag", f"ultra-ai/backend:{built}", f"ultra-ai/backend:{version}")
        if done.returncode != 0:
            raise RuntimeError(done.stderr)

    def connections(self) -> int:
        """ssh connections the host's sshd accepted so far (its log is the container's)."""
        logs = subprocess.run(["docker", "logs", self.host.container], capture_output=True, text=True, timeout=60)
        return (logs.stdout + logs.stderr).count("Accepted publickey")

    def shape(self, mbit: int) -> str:
        """The host's eth0 egress (host -> here) limited to `mbit` Mbit/s by a token bucket, or
        unshaped (0); returns what a 40 MB `ssh HOST head -c ...` then measures, as a check."""
        dev = ("tc", "qdisc")
        docker("exec", self.host.container, *dev, "del", "dev", "eth0", "root", check=False)
        if mbit:
            # burst: at least a few ms of the rate and a 64 KB segmentation-offload packet (less
            # drops every large packet); latency bounds the queue.
            burst = max(256_000, mbit * 1_000_000 // 8 // 250)
            rate = ("rate", f"{mbit}mbit", "burst", str(burst), "latency", "50ms")
            docker("exec", self.host.container, *dev, "add", "dev", "eth0", "root", "tbf", *rate, check=True)
        n = 40_000_000
        with open(os.devnull, "wb") as sink:
            took = timed([*self.host.ssh_argv(), "--", "head", "-c", str(n), "/dev/zero"], stdout=sink)
        return f"{n * 8 / took / 1e6:.0f} Mbit/s through ssh ({n / 1e6:.0f} MB in {took:.2f} s)"

    def settings_env(self) -> Environment:
        return load_settings(self.ssh.config).environment("staging")

    def remove(self) -> None:
        try:
            for env in self.envs:
                env.remove()
        finally:
            self.fleet.remove()


def report(name: str, labels: tuple[str, str], pairs: list[tuple[float, float]], target: float) -> None:
    ratios = [a / b for a, b in pairs]
    ratio = statistics.median(ratios)
    verdict = "met" if ratio <= target else "MISSED"
    print(f"\n| {name}, {len(pairs)} pairs | {labels[0]} | {labels[1]} | ratio (median of pairs) | target |")
    print("|---|---|---|---|---|")
    print(
        f"| median [runs] | {statistics.median(a for a, _ in pairs):.2f} s {[round(a, 2) for a, _ in pairs]} "
        f"| {statistics.median(b for _, b in pairs):.2f} s {[round(b, 2) for _, b in pairs]} "
        f"| **{ratio:.2f}** {[round(r, 2) for r in ratios]} | <= {target} {verdict} |\n",
        flush=True,
    )


def run_pairs(name: str, labels: tuple[str, str], runs: int, one, other) -> list[tuple[float, float]]:  # noqa: ANN001
    pairs = []
    for i in range(runs + 1):
        if i % 2:
            b, a = other(i), one(i)
        else:
            a, b = one(i), other(i)
        label = "warm-up" if i == 0 else f"pair {i}"
        print(
            f"{name} {label}: {labels[0]} {a:.2f}s, {labels[1]} {b:.2f}s, ratio {a / b:.2f} (load {load()})", flush=True
        )
        if i:
            pairs.append((a, b))
    return pairs


def part_deploy(bench: Bench, built: str, runs: int) -> None:
    versions: dict[int, str] = {}

    def version(i: int) -> str:
        if i not in versions:
            versions[i] = bench.version()
            bench.tag(built, versions[i])
        return versions[i]

    counted: list[int] = []

    def over_ssh(i: int) -> float:
        tag = version(i)  # before counting: tagging it on the host is an ssh connection of the bench's
        before = bench.connections()
        elapsed = timed(bench.here("deploy", "--tag", tag, "--skip-tests", "--skip-build"), env=bench.here_env())
        counted.append(bench.connections() - before)
        return elapsed

    def on_the_host(i: int) -> float:
        return timed(bench.there("deploy", "--tag", version(i), "--skip-tests", "--skip-build"))

    labels = ("deploy over SSH", "deploy on the host")
    pairs = run_pairs("deploy", labels, runs, over_ssh, on_the_host)
    exec_alone = statistics.median(timed(["docker", "exec", bench.host.container, "true"]) for _ in range(5))
    print(f"`docker exec HOST true` alone: {exec_alone:.2f} s (part of every on-host time)")
    print(
        f"ssh connections per deploy over SSH: {counted}; one `ssh HOST true`: {ssh_alone(bench):.2f} s (median of 5)"
    )
    report("deploy", labels, pairs, 1.3)


def ssh_alone(bench: Bench) -> float:
    return statistics.median(timed([*bench.host.ssh_argv("deploy"), "--", "true"]) for _ in range(5))


def part_backup(bench: Bench, runs: int, size_mb: int, links: list[int], profile: bool) -> None:
    env = bench.settings_env()
    with Reach(env) as reached, psycopg.connect(**reached.database.conninfo(), autocommit=True) as conn:
        size = fill_bulk(conn, size_mb)
    print(f"database {env.database.name} on the host: {size:.0f} MB (load {load()})", flush=True)
    if profile:
        profile_backup(env)
    for mbit in links:
        link = f"{mbit} Mbit/s" if mbit else "unshaped"
        print(f"\nlink {link}: {bench.shape(mbit)} (load {load()})", flush=True)
        try:
            backup_pairs(bench, env, runs, link)
        finally:
            bench.shape(0)


def profile_backup(env: Environment) -> None:
    """One in-process backup under cProfile (wall clock: the main thread's waits show as time)."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    with Reach(env) as reached:
        create_backup(reached, version=None, label="bench", log=StampedLog(t0))
    prof.disable()
    print(f"profiled create_backup with its Reach: {time.perf_counter() - t0:.2f} s", flush=True)
    pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(35)


class StampedLog:
    """create_backup's log lines with the seconds since `t0`."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0

    def info(self, msg: str) -> None:
        print(f"  +{time.perf_counter() - self.t0:.3f}s {msg}", flush=True)

    warning = info


def backup_pairs(bench: Bench, env: Environment, runs: int, link: str) -> None:
    container = bench.ssh.container("postgres")
    dump = "/tmp/bench.dump"
    copy = bench.work / "bare.dump"

    counted: list[int] = []
    in_process: list[float] = []

    def ultra_ops(_: int) -> float:
        before = bench.connections()
        elapsed = timed(bench.here("backups", "create"), env=bench.here_env())
        counted.append(bench.connections() - before)
        # The same backup in this process: the engine's create_backup (tunnels opened and closed
        # included), without the CLI's interpreter start, imports and Dagster run.
        t0 = time.perf_counter()
        with Reach(env) as reached:
            create_backup(reached, version=None, label="bench")
        in_process.append(time.perf_counter() - t0)
        return elapsed

    streamed: list[float] = []

    def plain_stream() -> None:
        """The floor of streaming: `ssh HOST docker exec CONTAINER pg_dump ... > here`, nothing
        else (no counts, no hashing, no fsync, no run connection)."""
        t0 = time.perf_counter()
        with copy.open("wb") as sink:
            argv = [*bench.host.ssh_argv(), "--", "docker", "exec", container, "pg_dump", "-Fc", "-Z1"]
            subprocess.run([*argv, "-U", env.database.user, env.database.name], stdout=sink, check=True, timeout=1800)
        streamed.append(time.perf_counter() - t0)
        copy.unlink()

    def dump_then_copy(_: int) -> float:
        t0 = time.perf_counter()
        done = bench.host.ssh(
            "docker",
            "exec",
            container,
            "pg_dump",
            "-Fc",
            "-Z1",
            "-U",
            env.database.user,
            env.database.name,
            ">",
            dump,
            timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_dump on the host: {done.stderr}")
        with copy.open("wb") as sink:
            subprocess.run([*bench.host.ssh_argv(), "--", "cat", dump], stdout=sink, check=True, timeout=1800)
        elapsed = time.perf_counter() - t0
        bench.host.ssh("rm", "-f", dump)
        copy.unlink()
        plain_stream()
        return elapsed

    name = f"backup ({link})"
    labels = ("ultra-ops backups create", "pg_dump on the host + ssh cat")
    pairs = run_pairs(name, labels, runs, ultra_ops, dump_then_copy)
    sizes = sorted(p.stat().st_size for p in env.backups_path.rglob("database.dump"))
    print(f"dump size: {sizes[-1] / 1e6:.1f} MB" if sizes else "no dump found")
    report(name, labels, pairs, 1.0)
    bare = [b for _, b in pairs]
    ratios = [a / b for a, b in zip(in_process[1:], bare, strict=True)]
    print(
        f"{name}: create_backup in this process: {statistics.median(in_process[1:]):.2f} s "
        f"{[round(t, 2) for t in in_process[1:]]}, against the same bare runs: **{statistics.median(ratios):.2f}** "
        f"{[round(r, 2) for r in ratios]}; ssh connections per `backups create`: {counted}",
        flush=True,
    )
    plain = [a / b for a, b in zip(streamed[1:], bare, strict=True)]
    fixed = [a - b for a, b in zip([a for a, _ in pairs], in_process[1:], strict=True)]
    print(
        f"{name}: plain `ssh HOST docker exec pg_dump > here` (after each bare run): "
        f"{statistics.median(streamed[1:]):.2f} s "
        f"{[round(t, 2) for t in streamed[1:]]}, against the bare runs: **{statistics.median(plain):.2f}** "
        f"{[round(r, 2) for r in plain]}; the CLI minus in-process: {statistics.median(fixed):.2f} s "
        f"{[round(t, 2) for t in fixed]}",
        flush=True,
    )
    # Old backups out of the folder (untimed): they only fill the disk.
    for old in env.backups_path.iterdir():
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default="deploy,backup")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--link-mbit", default="0", help="backup part: comma-separated link rates, 0 = unshaped")
    parser.add_argument("--profile", action="store_true", help="backup part: one in-process backup profiled")
    args = parser.parse_args()
    try:
        links = [int(x) for x in args.link_mbit.split(",")]
    except ValueError:
        parser.error(f"--link-mbit: comma-separated whole Mbit/s (0: unshaped), got {args.link_mbit!r}")
    if any(x < 0 for x in links):
        parser.error("--link-mbit: rates cannot be negative")
    reason = docker_unavailable()
    if reason:
        print(f"Docker cannot run here: {reason}")
        return 1
    # SIGTERM as Ctrl-C: the finally below removes the host either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="uo-hosts-bench-"))
    bench = None
    try:
        t0 = time.perf_counter()
        bench = Bench(work)
        bench.start()
        parts = args.parts.split(",")
        built = bench.prepare(on_host="deploy" in parts)
        print(f"host ready, both environments running {built} ({time.perf_counter() - t0:.0f} s; load {load()})")
        if "deploy" in parts:
            part_deploy(bench, built, args.runs)
        if "backup" in parts:
            part_backup(bench, args.runs, args.size_mb, links, args.profile)
    finally:
        if bench is not None:
            bench.remove()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
