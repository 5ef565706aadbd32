"""An env file rewritten by root keeps its owner: the platform's run containers (uid 10001) read and
update the same env files an operator updates as root on the host."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ultra_ops.engine.envfile import read_env_file, update_env_file

RUN_UID = 10001  # the ultra_ops image's user


@pytest.mark.unit
@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_root_updating_an_env_file_keeps_its_owner_and_mode(tmp_path: Path) -> None:
    path = tmp_path / ".env.staging"
    path.write_text("POSTGRES_PASSWORD=secret\nULTRA_VERSION=v1.0.0\n")
    os.chown(path, RUN_UID, RUN_UID)
    path.chmod(0o600)
    update_env_file(path, {"ULTRA_VERSION": "v1.1.0"})
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (RUN_UID, RUN_UID, 0o600)
    assert read_env_file(path) == {"POSTGRES_PASSWORD": "secret", "ULTRA_VERSION": "v1.1.0"}


@pytest.mark.unit
def test_a_new_env_file_belongs_to_whoever_writes_it(tmp_path: Path) -> None:
    path = tmp_path / ".env.staging"
    update_env_file(path, {"ULTRA_VERSION": "v1.0.0"})
    st = path.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o600)
