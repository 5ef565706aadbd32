"""Bad smoke, performance and window settings: one error naming the file, the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from ultra_ops.engine.errors import ConfigError
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import write_config

pytestmark = pytest.mark.unit

V = "environments.staging.verify"
STEP = (
    '[environments.staging.verify.smoke.s]\nbase_url = "http://127.0.0.1:9"\n'
    '[[environments.staging.verify.smoke.s.steps]]\nname = "one"\n'
)


@pytest.mark.parametrize(
    "extra, key, reason",
    [
        (
            STEP + 'headers = { Authorization = "Bearer {token}" }\n',
            f"{V}.smoke.s.steps[0].name",
            "uses {token}, which no earlier step captures",
        ),
        (
            STEP + 'expect_fields = { token = "text" }\n',
            f"{V}.smoke.s.steps[0].expect_fields.token",
            "expected one of string, number",
        ),
        (STEP + 'path = "api"\n', f"{V}.smoke.s.steps[0].path", "must start with '/'"),
        (STEP + 'json = { a = 1 }\nbody = "x"\n', f"{V}.smoke.s.steps[0].body", "json or body, not both"),
        (
            STEP + 'expect_metric_increase = { ultra_prompts_total = "before" }\n',
            f"{V}.smoke.s.steps[0].expect_metric_increase.ultra_prompts_total",
            "'before' is not captured",
        ),
        (
            '[environments.staging.verify.smoke.s]\nbase_url = "ftp://x"\nsteps = []\n',
            f"{V}.smoke.s.base_url",
            "expected an http:// or https:// URL",
        ),
        (
            "[environments.staging.verify.window]\nsamples = 3\nfailure_limit = 3\n",
            f"{V}.window.failure_limit",
            "could never fail the window",
        ),
        (
            '[environments.staging.verify.window]\non_inconclusive = "guess"\n',
            f"{V}.window.on_inconclusive",
            "expected one of wait, fail, pass",
        ),
        ("[environments.staging.verify.window]\ndecision_wait_s = inf\n", f"{V}.window.decision_wait_s", "finite"),
        (
            "[environments.staging.verify.performance]\nrequests = 0\n",
            f"{V}.performance.requests",
            "expected 1 to 100000",
        ),
        (
            '[environments.staging.verify.performance]\nendpoints = [{ name = "a", url = "http://x", p95_ms = 0 }]\n',
            f"{V}.performance.endpoints[0].p95_ms",
            "greater than 0",
        ),
    ],
)
def test_bad_verification_settings_name_the_key(tmp_path: Path, extra: str, key: str, reason: str) -> None:
    path = write_config(tmp_path, "some_db")
    path.write_text(path.read_text() + "\n" + extra)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == key and reason in str(info.value), str(info.value)


def test_process_secret_env_names_a_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path, "some_db")
    line = 'secret_env = { ULTRA_AUTH_PASSWORD = "hunter2 pw" }\n'
    text = path.read_text().replace('health_url = "', line + 'health_url = "', 1)
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "environments.staging.processes.backend.secret_env.ULTRA_AUTH_PASSWORD"
    assert "must name the environment variable" in str(info.value)
