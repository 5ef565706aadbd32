"""The UI of the production platform in a real browser: headless Chromium (Debian's `chromium`)
driven by Playwright for Python, which launches that binary; nothing is downloaded. An operator
finds the ultra_ops jobs, picks an environment in verify_job's launchpad (no YAML typed), launches
it and sees it succeed, then finds the runs the CLI made under their jobs. Screenshots of every
step are kept in ultra_ops_tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from ultra_ops_tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from ultra_ops_tests.support.platform_stack import RunningPlatform, running_platform
from ultra_ops_tests.support.services import REPO

ARTIFACTS = REPO / "ultra_ops_tests" / "artifacts"

playwright = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (pip install -e .[test])"
)
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium is not installed (scripts/bootstrap.sh installs it as root: apt-get install chromium)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    # Production too (nothing deployed there): its coming release tick waits for an approval.
    environments = ("development", "staging", "production")
    with running_platform(tmp_path_factory.mktemp("browser"), environments=environments) as running:
        # The operator's shell: a deploy and a verify of development, recorded on the platform's instance;
        # then v1.0.0 on staging and v1.1.0 on development, so staging's next release is v1.1.0 (and
        # production's v1.0.0, verified on staging).
        for argv in (
            ("deploy", "--environment", "development", "--tag", "v1.0.0", "--skip-tests", "--skip-build"),
            ("verify", "--environment", "development"),
            ("deploy", "--environment", "staging", "--tag", "v1.0.0", "--skip-tests", "--skip-build"),
            ("deploy", "--environment", "development", "--tag", "v1.1.0", "--skip-tests", "--skip-build"),
        ):
            result = running.ops(*argv)
            assert result.returncode == 0, result.stdout + result.stderr
        yield running


@pytest.fixture
def page(platform: RunningPlatform) -> Iterator[object]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


def _open_menu(box, item, timeout_s: float = 60) -> None:  # noqa: ANN001
    """Click the picker until its menu shows `item`: the partitions load after the page, and a
    click before they arrive opens nothing."""
    deadline = time.monotonic() + timeout_s
    while True:
        box.click()
        try:
            playwright.expect(item).to_be_visible(timeout=3000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            box.press("Escape")


class Shots:
    def __init__(self, page: object) -> None:
        self.page = page
        self.folder = ARTIFACTS / time.strftime("browser-%Y%m%d-%H%M%S")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def take(self, name: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"))


def test_launch_verify_from_the_launchpad_and_find_cli_runs(platform: RunningPlatform, page) -> None:  # noqa: ANN001
    expect = playwright.expect
    base = platform.platform.url
    shots = Shots(page)
    print(f"screenshots: {shots.folder}")
    try:
        # The ultra_ops jobs, as the Jobs page lists them.
        page.goto(f"{base}/jobs")
        for job in ("deploy_job", "verify_job", "rollback_job", "backup_job"):
            expect(page.locator(f"a[href='/locations/ultra_ops/jobs/{job}']").first).to_be_visible(timeout=60_000)
        shots.take("jobs")

        page.locator("a[href='/locations/ultra_ops/jobs/verify_job']").first.click()
        page.get_by_role("tab", name="Launchpad").or_(page.get_by_role("link", name="Launchpad")).first.click()
        partition = page.get_by_placeholder("Partition")
        expect(partition).to_be_visible(timeout=30_000)
        shots.take("launchpad")

        # The environment is a pick from the partitions, not YAML: the form has no required field.
        options = page.get_by_role("menuitem")
        _open_menu(partition, options.filter(has_text="development"))
        assert {o.strip() for o in options.all_inner_texts()} >= {"development", "staging"}
        options.filter(has_text="development").first.click()
        expect(page.get_by_text("ultra_ops/environment: development")).to_be_visible()
        expect(page.get_by_text("No errors")).to_be_visible()
        shots.take("environment-picked")

        page.get_by_role("button", name="Launch Run").click()
        page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}.*"), timeout=60_000)
        run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
        shots.take("run-launched")
        # The run page shows the run's status; the queue, the daemon and the code server take it to the end.
        expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=180_000)
        shots.take("run-succeeded")
        assert platform.ui.wait(run_id, timeout=30) == "SUCCESS"

        # The CLI's runs sit under their jobs, beside the UI's.
        cli_deploy = next(
            r
            for r in platform.ui.job_runs("deploy_job")
            if {"key": "ultra_ops/environment", "value": "development"} in r["tags"]
        )
        page.goto(f"{base}/runs")
        expect(page.get_by_text(run_id[:8]).first).to_be_visible(timeout=60_000)
        expect(page.get_by_text(cli_deploy["runId"][:8]).first).to_be_visible()
        shots.take("runs")
        page.goto(f"{base}/locations/ultra_ops/jobs/deploy_job/runs")
        expect(page.get_by_text(cli_deploy["runId"][:8]).first).to_be_visible(timeout=60_000)
        shots.take("deploy-job-runs")
        page.goto(f"{base}/locations/ultra_ops/jobs/verify_job/runs")
        cli_verifies = [r["runId"] for r in platform.ui.job_runs("verify_job") if r["runId"] != run_id]
        assert cli_verifies, "the CLI's verify run is not under verify_job"
        expect(page.get_by_text(cli_verifies[0][:8]).first).to_be_visible(timeout=60_000)
        expect(page.get_by_text(run_id[:8]).first).to_be_visible()
        shots.take("verify-job-runs")
    except Exception:
        shots.take("failure")
        raise


def test_deploy_launchpad_offers_a_newer_version_and_a_downgrade_changes_nothing(
    platform: RunningPlatform,
    page,  # noqa: ANN001
) -> None:
    """Staging runs v1.0.0: its launchpad offers v1.1.0 (development's, its next release), and a
    downgrade typed into the form fails its first step naming both versions, leaving staging as it was."""
    from ultra_ops.engine.backups.store import list_backups
    from ultra_ops.engine.release.records import find_releases
    from ultra_ops.engine.settings import load_settings

    expect = playwright.expect
    staging = load_settings(platform.config).environment("staging")
    before = (staging.env_file.read_bytes(), find_releases(staging), list_backups(staging))
    shots = Shots(page)
    try:
        page.goto(f"{platform.platform.url}/locations/ultra_ops/jobs/deploy_job")
        page.get_by_role("tab", name="Launchpad").or_(page.get_by_role("link", name="Launchpad")).first.click()
        partition = page.get_by_placeholder("Partition")
        expect(partition).to_be_visible(timeout=30_000)
        options = page.get_by_role("menuitem")
        _open_menu(partition, options.filter(has_text="staging"))
        options.filter(has_text="staging").first.click()
        editor = page.locator(".CodeMirror-code").first
        expect(editor).to_contain_text("tag: 'v1.1.0'", timeout=30_000)
        for absent in ("config_path", "lock_wait_s"):  # only what an operator sets
            expect(editor).not_to_contain_text(absent)
        shots.take("deploy-form-offers-v1.1.0")

        downgrade = "ops:\n  deploy_plan:\n    config:\n      tag: v0.9.0\n      skip_build: true\n"
        page.evaluate("text => document.querySelector('.CodeMirror').CodeMirror.setValue(text)", downgrade)
        expect(page.get_by_text("No errors")).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Launch Run").click()
        page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}.*"), timeout=60_000)
        run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
        assert platform.ui.wait(run_id) == "FAILURE"
        expect(page.get_by_text("refusing to downgrade staging from v1.0.0 to v0.9.0").first).to_be_visible(
            timeout=60_000
        )
        shots.take("downgrade-refused")
    except Exception:
        shots.take("failure")
        raise
    assert (staging.env_file.read_bytes(), find_releases(staging), list_backups(staging)) == before


def test_the_release_asset_shows_what_runs_where_and_a_pending_decision_is_in_view(
    platform: RunningPlatform,
    page,  # noqa: ANN001
) -> None:
    """The releases asset's partitions show each environment's running version (staging v1.0.0,
    development v1.1.0, from the module's deploys); pending_decisions, refreshed as `ultra-ops
    calendar --record` does, shows production's tick awaiting approval with the command that answers it."""
    expect = playwright.expect
    base = platform.platform.url
    result = platform.ops("calendar", "--record")  # the one extra step: what release_calendar_schedule does hourly
    assert result.returncode == 0, result.stdout + result.stderr
    shots = Shots(page)
    try:
        for environment, version in (("staging", "v1.0.0"), ("development", "v1.1.0")):
            page.goto(f"{base}/assets/releases?view=partitions&partition={environment}")
            running = page.locator("tr").filter(has=page.get_by_text("running", exact=True)).first
            expect(running.get_by_role("cell", name=version, exact=True)).to_be_visible(timeout=60_000)
            shots.take(f"releases-{environment}-runs-{version}")

        page.goto(f"{base}/assets/pending_decisions")
        waiting = page.locator("tr").filter(has=page.get_by_text("pending", exact=True)).first
        expect(waiting.get_by_role("cell", name="1", exact=True)).to_be_visible(timeout=60_000)  # one waits
        approve = "ultra-ops approve --environment production --tag v1.0.0 --by NAME"
        expect(page.get_by_text(approve).first).to_be_visible()
        shots.take("pending-production-approval")
    except Exception:
        shots.take("failure")
        raise
