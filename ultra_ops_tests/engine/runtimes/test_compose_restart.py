"""The pieces of a compose restart with its containers made ahead that need no engine: the commands,
which containers a killed restart left, and when the prepared containers are no longer what compose
would make after the swap. The restart itself runs on dockerd in ultra_ops_tests/compose/."""

from __future__ import annotations

from pathlib import Path

import pytest

from ultra_ops.engine.runtimes.compose import ComposeRuntime
from ultra_ops.engine.runtimes.compose_containers import containers_args, parse_containers, project_label, strays
from ultra_ops.engine.runtimes.compose_restart import PreparedStart, create_args, same_inputs
from ultra_ops.engine.settings import load_settings

pytestmark = pytest.mark.unit


def test_commands(tmp_path: Path) -> None:
    (tmp_path / ".env.staging").write_text("POSTGRES_PASSWORD=p\nREDIS_PASSWORD=r\n")
    (tmp_path / "ultra_ops.toml").write_text(
        f'[environments.staging]\nruntime = "compose"\nroot = "{tmp_path}"\ncompose_file = "{tmp_path / "c.yml"}"\n'
        f'compose_command = ["docker-compose"]\nstate_dir = "{tmp_path / "state"}"\n'
        '[environments.staging.database]\nname = "ultra"\n'
    )
    rt = ComposeRuntime(load_settings(tmp_path / "ultra_ops.toml").environment("staging"))
    # Created beside the running container, not instead of it: never -d (compose refuses it with
    # --no-start), never a recreate, nothing of the stores.
    assert create_args(rt, {"backend": 2}) == [
        *rt.compose_base(),
        "up",
        "--no-deps",
        "--no-start",
        "--no-recreate",
        "--scale",
        "backend=2",
        "backend",
    ]
    listed = containers_args(rt.project)
    assert "label=com.docker.compose.project=ultra-staging" in listed
    assert "label=com.docker.compose.oneoff=False" in listed  # `run` containers are not the service's
    assert project_label("Ultra.Staging_1") == "ultrastaging_1"
    listing = "a1\tbackend\trunning\nb2\t\texited\nc3\tpostgres\tcreated\n"  # b2: a one-off, no service label
    assert parse_containers(listing) == [("a1", "backend", "running"), ("c3", "postgres", "created")]


def test_strays_are_what_a_killed_restart_leaves_beside_the_service() -> None:
    # Newest first, as docker lists them.
    assert strays([("new", "backend", "created"), ("old", "backend", "running"), ("pg", "postgres", "running")]) == [
        "new"
    ]
    assert strays([("new", "backend", "running"), ("old", "backend", "exited")]) == ["old"]
    # Stopped for a swap, successor made: the successor goes, `up` starts or recreates the old one.
    assert strays([("new", "backend", "created"), ("old", "backend", "exited")]) == ["new"]
    # One container, or several with none that can go: nothing.
    assert strays([("only", "backend", "exited")]) == []
    assert strays([("b", "backend", "created"), ("a", "backend", "created")]) == ["a"]  # the newest stays
    assert strays([("b", "postgres", "created"), ("a", "postgres", "running")]) == []  # the stores are not touched


def test_prepared_containers_are_used_only_for_the_inputs_they_were_made_from() -> None:
    compose = "services:\n  backend:\n    image: ultra-ai/backend:${ULTRA_IMAGE_TAG}\n"
    env = {"POSTGRES_PASSWORD": "p", "ULTRA_VERSION": "v1.1.0", "ULTRA_IMAGE_TAG": "v1.1.0"}
    prepared = PreparedStart("v1.0.0", {"backend": ["old"]}, {"backend": "new"}, env, compose)
    # The swap restores the backup's env file: its version lines (ultra_ops's compose commands set
    # the image tag over the env file's).
    restored = {**env, "ULTRA_VERSION": "v1.0.0", "ULTRA_IMAGE_TAG": "v1.0.0"}
    assert same_inputs(prepared, "v1.0.0", compose, restored)
    assert not same_inputs(prepared, "v1.0.1", compose, restored)  # the restored env file names another version
    assert not same_inputs(prepared, "v1.0.0", compose, {**restored, "POSTGRES_PASSWORD": "q"})
    assert not same_inputs(prepared, "v1.0.0", compose + "# changed\n", restored)
    # A compose file that interpolates the env file's version: its line counts too.
    reads_version = compose + "    labels: {version: ${ULTRA_VERSION}}\n"
    prepared = PreparedStart("v1.0.0", {}, {}, env, reads_version)
    assert not same_inputs(prepared, "v1.0.0", reads_version, restored)
    assert same_inputs(prepared, "v1.0.0", reads_version, env)
