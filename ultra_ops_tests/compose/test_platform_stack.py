"""The platform stack for real: the repository's docker-compose.yml up on this engine from the
locally built images (the ultra_ops image from the repository's Dockerfile, the local PostgreSQL
and socket proxy), runs launched through GraphQL as the UI launches them, each started by the
DockerRunLauncher in a container of its own: purge_runs_job, and a deploy_job and a verify_job that
deploy and verify a compose environment of Ultra AI through the deploy socket proxy. Nothing is
left behind when the stack stops."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from ultra_ops.cli import main
from ultra_ops.demo_calendar import plan_release
from ultra_ops.engine.envfile import read_env_file
from ultra_ops_tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from ultra_ops_tests.support.docker import ComposeEnvironment, docker, docker_unavailable
from ultra_ops_tests.support.platform_compose import PlatformCompose, platform_compose
from ultra_ops_tests.support.platform_environment import RUN_UID, build_backend, hand_over, platform_environment
from ultra_ops_tests.support.webserver import UI

pytestmark = pytest.mark.docker

_RUN_S = 120
DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@pytest.fixture(scope="module")
def ultra_ai() -> Iterator[ComposeEnvironment]:
    """The compose environment the stack's runs deploy: made before the stack, whose code server
    loads its config, and removed after the stack is down."""
    reason = docker_unavailable()
    if reason:
        pytest.skip(f"Docker cannot run here: {reason}")
    with platform_environment() as env:
        yield env


@pytest.fixture(scope="module")
def stack(ultra_ai: ComposeEnvironment) -> Iterator[PlatformCompose]:
    from ultra_ops.local_images.platform import ensure_platform_image

    with platform_compose(ensure_platform_image(), ultra_ai.config) as running:
        yield running
        # Each run's container goes with it (auto_remove), moments after the run ends.
        deadline = time.monotonic() + 30
        while left := running.run_containers():
            assert time.monotonic() < deadline, f"run containers outlived their runs: {left}"
            time.sleep(0.5)
    assert running.leftovers() == [], "docker-compose down left containers, volumes or networks behind"


def _wait_done(client: DagsterGraphQLClient, run_id: str) -> DagsterRunStatus:
    deadline = time.monotonic() + _RUN_S
    while (status := client.get_run_status(run_id)) not in DONE:
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {status} after {_RUN_S} s")
        time.sleep(0.5)
    return status


@pytest.fixture(scope="module")
def graphql_run(stack: PlatformCompose) -> tuple[str, DagsterRunStatus]:
    """purge_runs_job launched through GraphQL as the UI launches it, waited on to its end."""
    client = DagsterGraphQLClient("127.0.0.1", port_number=stack.port, timeout=30)
    # The code location loads: the webserver knows the job from the code server's gRPC.
    run_id = client.submit_job_execution(
        "purge_runs_job",
        run_config={"ops": {"purge_old_runs": {"config": {"older_than_days": 30, "dry_run": True}}}},
    )
    return run_id, _wait_done(client, run_id)


def test_a_run_launched_through_graphql_runs_in_its_own_container_and_leaves_none(
    stack: PlatformCompose, graphql_run: tuple[str, DagsterRunStatus]
) -> None:
    run_id, status = graphql_run
    # The daemon dequeued it and the run launcher started it in a container of its own, from the
    # code location's image, on the platform network; the run reached Dagster's PostgreSQL from there.
    run = _run_tags(stack, run_id)
    assert status == DagsterRunStatus.SUCCESS, stack.logs()
    container = run.get("docker/container_id")
    assert container, run
    assert run["dagster/image"] == stack.image
    # The container goes with its run: nothing is left on the engine once the run is over.
    deadline = time.monotonic() + 30
    while docker("ps", "-aq", "--filter", f"label=dagster/run_id={run_id}").stdout.strip():
        assert time.monotonic() < deadline, f"the run container {container} is still there"
        time.sleep(0.2)
    assert stack.run_containers() == []


def _run_tags(stack: PlatformCompose, run_id: str) -> dict[str, str]:
    query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } } } }"
    answer = httpx.post(f"{stack.url}/graphql", json={"query": query, "variables": {"id": run_id}}, timeout=30)
    return {t["key"]: t["value"] for t in answer.json()["data"]["runOrError"]["tags"]}


# Run in one container of the ultra_ops image on the deploy network, as a run container runs it.
_PROBE = """
docker ps --format '{{.Names}}'; echo "ps=$?"
docker images -q >/dev/null; echo "images=$?"
docker info >/dev/null; echo "info=$?"
docker exec "$1" true 2>&1; echo "exec=$?"
docker system df 2>&1; echo "system=$?"
ssh -V 2>&1; echo "ssh=$?"
"""


def test_run_containers_reach_docker_only_through_the_deploy_proxy_and_only_what_it_allows(
    stack: PlatformCompose,
) -> None:
    postgres = f"{stack.project}_dagster-postgres_1"
    out = docker(
        "run", "--rm", "--network", stack.networks["ULTRA_OPS_DEPLOY_NETWORK"],
        "-e", "DOCKER_HOST=tcp://docker-api-deploy:2375",  # as dagster.yaml gives every run container
        stack.image, "bash", "-c", _PROBE, "probe", postgres, timeout=60,
    ).stdout  # fmt: skip
    codes = dict(line.split("=", 1) for line in out.splitlines() if line.split("=")[0] in _CHECKS)
    # What the compose runtime needs passes: listing containers and images (docker-compose ps, build),
    # the engine's info (docker-compose up asks for it first).
    assert codes["ps"] == "0" and postgres in out.split(), out
    assert codes["images"] == "0" and codes["info"] == "0", out
    # Environments on hosts of their own are reached over ssh, from the run container too.
    assert codes["ssh"] == "0" and "OpenSSH" in out, out
    # What it does not: exec into another container (here Dagster's own database) and system calls.
    assert codes["exec"] != "0" and codes["system"] != "0" and out.count("403") >= 2, out
    # Only the deploy proxy is on that network: a run container cannot reach the launcher's proxy.
    network = stack.networks["ULTRA_OPS_DEPLOY_NETWORK"]
    members = docker("network", "inspect", "--format", "{{range .Containers}}{{.Name}} {{end}}", network).stdout
    assert members.split() == [f"{stack.project}_docker-api-deploy_1"], members


_CHECKS = {"ps", "images", "info", "exec", "system", "ssh"}


def test_the_webserver_reaches_no_docker_api(stack: PlatformCompose) -> None:
    probe = (
        "import socket, sys\n"
        "for h in sys.argv[1:]:\n"
        "    try: socket.getaddrinfo(h, 2375); print(h)\n"
        "    except OSError: pass"
    )
    found = stack.compose(
        "exec", "-T", "dagster-webserver", "python", "-c", probe,
        "docker-api-launcher", "docker-api-deploy", "dagster-postgres", timeout=60,
    )  # fmt: skip
    assert found.stdout.split() == ["dagster-postgres"], found.stdout


def test_the_browser_finds_the_jobs_and_the_run_on_this_webserver(
    stack: PlatformCompose, graphql_run: tuple[str, DagsterRunStatus]
) -> None:
    """The UI of this webserver in headless Chromium: the jobs listed from the code server, and the
    run the launcher ran in its container shown as succeeded."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/bootstrap.sh installs it as root)")
    expect = sync_api.expect
    run_id, _ = graphql_run
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{stack.url}/jobs")
            for job in ("deploy_job", "verify_job", "purge_runs_job"):
                expect(page.locator(f"a[href='/locations/ultra_ops/jobs/{job}']").first).to_be_visible(timeout=60_000)
            page.goto(f"{stack.url}/runs/{run_id}")
            expect(page.get_by_text("purge_runs_job").first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=60_000)
        finally:
            browser.close()


_DEPLOY_S = 600


def test_deploy_and_verify_jobs_run_in_their_containers_and_deploy_ultra_ai_through_the_deploy_proxy(
    stack: PlatformCompose, ultra_ai: ComposeEnvironment
) -> None:
    env = ultra_ai
    # The operator prepares the environment on the host, as root: env file, passwords, stores up, two
    # releases' branches in the Ultra AI checkout, the second one's image built beforehand; then hands
    # everything to the run containers' user.
    assert main(["init", "--environment", env.environment, "--config", str(env.config)]) == 0
    first, second = env.version(1), env.version(2)
    for version in (first, second):
        plan_release(env.repo, version)
        assert main(["release-branch", "--tag", version, "--config", str(env.config)]) == 0
        env.versions.append(version)
    build_backend(env, second)
    prebuilt = _image_id(f"ultra-ai/backend:{second}")
    hand_over(env)

    ui = UI(stack.port)
    # The first release built from its commit inside the run container (the deploy proxy allows builds).
    deploy = ui.launch_partition("deploy_job", env.environment, _deploy_form(first))
    assert ui.wait(deploy, timeout=_DEPLOY_S) == "SUCCESS", "\n".join(_run_messages(stack, deploy)[-30:])
    verify = ui.launch_partition("verify_job", env.environment)
    assert ui.wait(verify, timeout=_RUN_S) == "SUCCESS", "\n".join(_run_messages(stack, verify)[-30:])
    assert _serves(env) == first
    # The second over the running first, from the image built beforehand: compose recreates the backend.
    again = ui.launch_partition("deploy_job", env.environment, _deploy_form(second, skip_build=True))
    assert ui.wait(again, timeout=_DEPLOY_S) == "SUCCESS", "\n".join(_run_messages(stack, again)[-30:])

    runs = {run_id: _run_messages(stack, run_id) for run_id in (deploy, verify, again)}
    # The runs built, backed up, brought the project up and read its containers' figures from
    # docker stats, all through the deploy proxy.
    assert any(f"compose build {env.project} at {first}" in m for m in runs[deploy]), runs[deploy]
    assert any(f"compose up {env.project} at {first}" in m for m in runs[deploy]), runs[deploy]
    assert any(f"resources {env.container('backend')}" in m for m in runs[verify]), runs[verify]
    assert not any("compose build" in m for m in runs[again]), runs[again]
    assert any("backup" in m and f"taken of {env.environment} at {first}" in m for m in runs[again]), runs[again]
    containers = set()
    for run_id in runs:
        tags = _run_tags(stack, run_id)
        assert tags["dagster/image"] == stack.image and tags.get("docker/container_id"), tags
        containers.add(tags["docker/container_id"])
    assert len(containers) == 3, "runs shared a container"
    # The environment runs the second release, on the image the host built for it.
    assert _serves(env) == second
    running = docker("inspect", "--format", "{{.Image}}", env.container("backend")).stdout.strip()
    assert running == prebuilt
    # The run containers wrote the env file (the deployed version) and left it the user's, 0600.
    st = env.env_file.stat()
    assert (st.st_uid, oct(st.st_mode & 0o777)) == (RUN_UID, "0o600")
    assert read_env_file(env.env_file)["ULTRA_VERSION"] == second
    # The passwords the containers read never reached the runs' events or the platform's logs.
    passwords = [v for k, v in read_env_file(env.env_file).items() if k.endswith("_PASSWORD")]
    seen = "\n".join(m for messages in runs.values() for m in messages) + stack.logs()
    assert len(passwords) == 2 and not [p for p in passwords if p in seen]
    # Each container went with its run.
    for run_id in runs:
        assert not docker("ps", "-aq", "--filter", f"label=dagster/run_id={run_id}").stdout.strip()


def _deploy_form(tag: str, **fields: bool) -> dict:
    return {"ops": {"deploy_plan": {"config": {"tag": tag, **fields}}}}


def _serves(env: ComposeEnvironment) -> str:
    return httpx.get(f"http://{env.address}:{env.ports['backend']}/health", timeout=5).json()["version"]


def _image_id(tag: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()


_LOGS = """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
  ... on MessageEvent { message }
  ... on MaterializationEvent { metadataEntries { ...entry } }
  ... on ObservationEvent { metadataEntries { ...entry } }
  ... on ExecutionStepOutputEvent { metadataEntries { ...entry } } } } } }
fragment entry on MetadataEntry { label ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString }
  ... on MarkdownMetadataEntry { mdStr } ... on PathMetadataEntry { path } ... on UrlMetadataEntry { url } }"""


def _run_messages(stack: PlatformCompose, run_id: str) -> list[str]:
    """Every message of the run's event log, and its metadata, one string each."""
    answer = httpx.post(f"{stack.url}/graphql", json={"query": _LOGS, "variables": {"id": run_id}}, timeout=60)
    events = answer.json()["data"]["logsForRun"]["events"]
    return [e["message"] if "message" in e else json.dumps(e) for e in events if e]
