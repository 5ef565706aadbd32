"""The compose runtime's commands for an environment on a host: pure, no host needed."""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath

import pytest

from ultra_ops.engine.errors import ConfigError
from ultra_ops.engine.runtimes.compose import ComposeRuntime
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import config_with_host as config

pytestmark = pytest.mark.unit


def test_compose_runs_on_the_host_with_the_files_there(tmp_path: Path) -> None:
    keys = 'address = "10.0.0.5"\nuser = "deploy"\nroot = "/srv/ultra/staging"'
    env = load_settings(config(tmp_path, keys)).environment("staging")
    assert env.host is not None and env.host.root == PurePosixPath("/srv/ultra/staging")
    runtime = ComposeRuntime(env)
    assert runtime.host_path(env.env_file) == PurePosixPath("/srv/ultra/staging/.env.staging")
    base = runtime.compose_base()
    assert base[base.index("-f") + 1] == "/srv/ultra/staging/compose.yml"
    assert base[base.index("--env-file") + 1] == "/srv/ultra/staging/.env.staging"
    argv = runtime.remote_args(runtime.up_args(), runtime.command_env("v1.2.3"))
    assert argv[0] == "ssh" and argv[-3:-1] == ["--", "10.0.0.5"]
    remote = shlex.split(argv[-1])
    assert remote[:5] == [
        "env",
        "ULTRA_IMAGE_TAG=v1.2.3",
        "ULTRA_REGISTRY=",
        "ULTRA_ENVIRONMENT=staging",
        "ULTRA_LOG_VOLUME=backend-logs",  # the compose volume on the host, never a folder of this machine
    ]
    assert remote[5:] == runtime.up_args()
    # Built and pushed here, from this machine's files: the host gets the image afterwards.
    for args in (runtime.build_args("v1.2.3"), runtime.push_args()):
        assert args[args.index("-f") + 1] == str(env.compose_file)
        assert args[args.index("--env-file") + 1] == str(env.env_file)


def test_default_root_and_its_mistakes(tmp_path: Path) -> None:
    env = load_settings(config(tmp_path, 'address = "h"\nuser = "deploy"')).environment("staging")
    assert env.host is not None and env.host.root == PurePosixPath("/srv/ultra-ops/staging")
    for bad in ("srv/ultra", "/srv/../etc", "/"):
        with pytest.raises(ConfigError) as caught:
            load_settings(config(tmp_path, f'address = "h"\nuser = "deploy"\nroot = "{bad}"'))
        assert caught.value.key == "environments.staging.host.root"
        assert "is not an absolute folder on the host" in caught.value.reason
