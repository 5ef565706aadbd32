"""Faults under compose, on one initialised compose project shared by the module: the CLI killed
during a rollback (the swap inside the project's PostgreSQL included) then `recover`; a release
whose backend never becomes healthy; a failing image build and an unreachable registry; dockerd
unreachable for the CLI in the middle of a rollback. Each leaves the environment as it was or
finished: the backend serves the version that matches the database.

Between tests the environment is on one of two sides: `second` with a marker row written under
it, or `first` without (a finished rollback takes it across; the safety backup it leaves is the
way back for the next). Project.side() fails unless backend, its image and database agree."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from ultra_ops.cli import main
from ultra_ops.demo_calendar import plan_release
from ultra_ops.engine.backups.store import list_backups
from ultra_ops.engine.crash_points import CRASH_ENV
from ultra_ops.engine.settings.config import load_settings
from ultra_ops_tests.support.cli import start_cli
from ultra_ops_tests.support.docker import ComposeEnvironment, compose_environment, docker, docker_unavailable
from ultra_ops_tests.support.docker_proxy import DockerProxy

pytestmark = pytest.mark.docker

MARKER = "written under the second release"
HEALTH_TIMEOUT_S = 10  # the config's 120 s, shortened: a backend that never answers costs this long


@dataclass
class Project:
    env: ComposeEnvironment
    first: str
    second: str

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.env.ports['backend']}/health"

    def db(self) -> dict:
        return self.env.conninfo()

    def served(self) -> str | None:
        try:
            return httpx.get(self.health, timeout=5).json()["version"]
        except httpx.HTTPError:
            return None

    def marked(self) -> bool:
        with psycopg.connect(**self.db()) as conn:
            return conn.execute("SELECT count(*) FROM prompts WHERE title = %s", (MARKER,)).fetchone()[0] > 0

    def side(self) -> str:
        """`second` (as it was) or `first` (rolled back); fails unless backend and database agree
        and the backend runs the image of the version it serves."""
        served, marked = self.served(), self.marked()
        assert (served, marked) in ((self.second, True), (self.first, False)), (served, marked)
        image = docker("inspect", "--format", "{{.Config.Image}}", self.env.container("backend")).stdout.strip()
        assert image == f"ultra-ai/backend:{served}"
        return "second" if served == self.second else "first"

    def other_side(self) -> tuple[str, str]:
        """The side the environment is not on, and the newest backup of it: a rollback's target.
        (A rollback from `second` leaves a safety backup of `second`: the way back.)"""
        other = self.first if self.side() == "second" else self.second
        env = load_settings(self.env.config).environments[self.env.environment]
        backup = next(b.id for b in list_backups(env) if b.version == other)
        return ("first" if other == self.first else "second"), backup


def run(env: ComposeEnvironment, *argv: str, expect: int = 0) -> int:
    code = main([*argv, "--environment", env.environment, "--config", str(env.config)])
    assert code == expect, f"{argv}: exit {code}"
    return code


def ops(capsys: pytest.CaptureFixture[str], env: ComposeEnvironment, *argv: str) -> tuple[int, str]:
    code = main([*argv, "--environment", env.environment, "--config", str(env.config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def release(env: ComposeEnvironment, minor: int, dockerfile_tail: str = "") -> str:
    """A release branch from main; with `dockerfile_tail` appended to the backend's Dockerfile for
    this release only (main is put back after)."""
    version = env.version(minor)
    dockerfile = env.repo / "Dockerfile"
    original = dockerfile.read_text()
    if dockerfile_tail:
        dockerfile.write_text(original + dockerfile_tail)
        subprocess.run(["git", "-C", str(env.repo), "commit", "-qam", "break it"], check=True, timeout=30)
    plan_release(env.repo, version)
    assert main(["release-branch", "--tag", version, "--config", str(env.config)]) == 0
    env.versions.append(version)
    if dockerfile_tail:
        dockerfile.write_text(original)
        subprocess.run(["git", "-C", str(env.repo), "commit", "-qam", "mend it"], check=True, timeout=30)
    return version


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    reason = docker_unavailable()
    if reason:
        pytest.skip(f"Docker cannot run here: {reason}")
    tmp = tmp_path_factory.mktemp("compose-faults")
    with pytest.MonkeyPatch.context() as mp:
        (tmp / "dagster_home").mkdir()
        mp.setenv("DAGSTER_HOME", str(tmp / "dagster_home"))
        env = compose_environment(tmp)
        text = env.config.read_text()
        env.config.write_text(text.replace("health_timeout_s = 120", f"health_timeout_s = {HEALTH_TIMEOUT_S}"))
        try:
            run(env, "init")
            first, second = release(env, 1), release(env, 2)
            run(env, "deploy", "--tag", first, "--skip-tests")
            # The same image under the second tag: what the faults need is two versions, not two builds.
            assert docker("tag", f"ultra-ai/backend:{first}", f"ultra-ai/backend:{second}").returncode == 0
            run(env, "deploy", "--tag", second, "--skip-build", "--skip-tests")
            p = Project(env, first, second)
            with psycopg.connect(**p.db()) as conn:
                conn.execute("INSERT INTO prompts (title) VALUES (%s)", (MARKER,))
            assert p.side() == "second"
            yield p
        finally:
            env.remove()


def _cli(p: Project, *argv: str, **extra: str) -> subprocess.Popen:
    return start_cli(
        *argv, environment=p.env.environment, config=p.env.config, env={**os.environ, **extra}, stderr=subprocess.STDOUT
    )


# kill -9 during a rollback, at each point of its one step with the backend down: with the restored
# release's container made beside the serving one, with the backend stopped, in the swap before its
# final rename (undone: as it was), with the swap done and the backend stopped, and with the new
# container started before the old one was removed (finished: the backup's side). The swap's other
# phases are the process runtime's too (engine/backups/test_swap.py).
@pytest.mark.parametrize(
    ("point", "finished"),
    [
        ("created:backend", False),
        ("stopped:backend", False),
        ("rename_old", False),
        ("swapped", True),
        ("started:backend", True),
    ],
)
def test_killed_rollback_then_recover(
    project: Project, point: str, finished: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    p = project
    before = p.side()
    target, backup = p.other_side()
    proc = _cli(p, "rollback", "--backup", backup, "--yes", **{CRASH_ENV: point})
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == -9, out
    code, out = ops(capsys, p.env, "recover")
    assert code == 0, out
    assert p.side() == (target if finished else before), out
    # Nothing of the killed restart is left beside the backend that serves.
    assert len(p.env.compose("ps", "-q", "backend").stdout.split()) == 1, out
    code, out = ops(capsys, p.env, "status")
    assert code == 0 and "running" in out, out


def test_failing_build_and_unreachable_registry_stop_nothing(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    p = project
    side = p.side()
    before = docker("inspect", "--format", "{{.Id}}", p.env.container("backend")).stdout.strip()
    leftovers = stray_containers()
    broken = release(p.env, 3, "RUN false\n")
    code, out = ops(capsys, p.env, "deploy", "--tag", broken, "--skip-tests")
    assert code != 0, out
    assert "compose build" in out and "failed" in out, out
    assert p.side() == side
    assert stray_containers() == leftovers  # the failed step's container was removed with it
    good = release(p.env, 4)
    closed = socket_port_closed()
    code, out = ops(capsys, p.env, "deploy", "--tag", good, "--skip-tests", "--registry", f"127.0.0.1:{closed}")
    assert code != 0, out
    assert f"127.0.0.1:{closed}" in out and "failed" in out, out
    assert p.side() == side
    # Nothing was stopped or recreated: the same container kept serving.
    assert docker("inspect", "--format", "{{.Id}}", p.env.container("backend")).stdout.strip() == before


def stray_containers() -> set[str]:
    """Stopped containers of no compose project: what a failed build step leaves without --force-rm."""
    listed = docker(
        "ps", "-a", "--filter", "status=exited", "--format", '{{.ID}} {{.Label "com.docker.compose.project"}}'
    )
    return {line.split()[0] for line in listed.stdout.splitlines() if len(line.split()) == 1}


def socket_port_closed() -> int:
    from ultra_ops_tests.support.ports import free_port

    return free_port()


def test_backend_never_healthy_rolls_back_to_the_previous_image_and_database(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    p = project
    side = p.side()
    # The release's backend exits at once (restart: unless-stopped keeps it failing).
    failing = release(p.env, 5, 'CMD ["python", "-c", "raise SystemExit(3)"]\n')
    code, out = ops(capsys, p.env, "deploy", "--tag", failing, "--skip-tests")
    assert code != 0, out
    assert "rolling back" in out, out
    assert p.side() == side


def test_dockerd_unreachable_mid_rollback_then_recover(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    p = project
    target, backup = p.other_side()
    folder = Path(tempfile.mkdtemp(prefix="uo-docker-", dir="/tmp"))  # a unix socket path has 108 bytes at most
    proxy = DockerProxy(folder / "docker.sock")
    try:
        proc = _cli(p, "rollback", "--backup", backup, "--yes", DOCKER_HOST=proxy.docker_host)
        seen = []
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if "goes back to" in line:  # swapped, services stopped: the next step is compose up
                proxy.close()
                break
        out = "".join(seen) + proc.communicate(timeout=240)[0]
    finally:
        proxy.close()
        shutil.rmtree(folder, ignore_errors=True)
    assert proc.returncode != 0, out
    assert "docker" in out.lower() and "compose up" in out, out
    assert "Traceback" not in out, out
    assert p.served() is None  # left stopped, and said so
    assert f"ultra-ops recover --environment {p.env.environment}`, which starts backend again" in out, out
    code, out = ops(capsys, p.env, "status")
    assert "services to put back" in out, out
    code, out = ops(capsys, p.env, "recover")
    assert code == 0, out
    assert "started staging's services (backend)" in out, out
    assert p.side() == target, out


def test_stop_with_dockerd_unreachable_stops_nothing_and_says_so(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    p = project
    side = p.side()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'nobody-listens.sock'}")
    code, out = ops(capsys, p.env, "stop")
    monkeypatch.undo()
    assert code != 0, out
    assert "compose" in out and "server API version" in out and "Traceback" not in out, out
    assert p.side() == side
