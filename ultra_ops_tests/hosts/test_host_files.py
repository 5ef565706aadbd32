"""Files on an environment's host: written atomically, whatever happens to the writer."""

from __future__ import annotations

import hashlib
import subprocess
import time

import pytest

from ultra_ops.engine.hosts import files
from ultra_ops.engine.hosts.ssh import RemoteCommandFailed
from ultra_ops_tests.support.hosts import TestHost

pytestmark = pytest.mark.docker

FOLDER = "/srv/ultra/staging"
PATH = f"{FOLDER}/.env.staging"


def listing(host: TestHost) -> list[str]:
    return sorted(host.exec("ls", "-A", FOLDER).stdout.split())


def test_write_read_and_folders(host: TestHost) -> None:
    remote = host.remote()
    assert files.read(remote, PATH) is None
    files.make_dirs(remote, FOLDER)
    assert host.exec("stat", "-c", "%a", FOLDER).stdout.strip() == "700"
    files.write_atomic(remote, PATH, "A=1\nB='two words'\n")
    assert files.read(remote, PATH) == "A=1\nB='two words'\n"
    assert host.exec("stat", "-c", "%a", PATH).stdout.strip() == "600"
    files.write_atomic(remote, PATH, "A=2\n", mode=0o640)
    assert files.read(remote, PATH) == "A=2\n"
    assert host.exec("stat", "-c", "%a", PATH).stdout.strip() == "640"
    assert listing(host) == [".env.staging"], "no temporary file left"
    with pytest.raises(RemoteCommandFailed):
        files.write_atomic(remote, "/srv/missing/folder/file", "x")
    files.remove(remote, PATH)
    files.remove(remote, PATH)
    assert files.read(remote, PATH) is None
    with pytest.raises(ValueError, match="absolute"):
        files.read(remote, "relative/path")


@pytest.mark.parametrize("how", ["killed", "closed"])
def test_a_writer_that_dies_half_way_leaves_the_old_file(host: TestHost, how: str) -> None:
    """The writer's ssh killed (-9) or its stdin closed half way through the content (the
    ultra_ops process that fed it died): the old file is intact and the temporary one goes."""
    remote = host.remote()
    files.make_dirs(remote, FOLDER)
    files.write_atomic(remote, PATH, "OLD=1\n")
    new = "NEW=" + "x" * 4_000_000 + "\n"
    writer = subprocess.Popen(remote.argv(files.write_command(PATH, new)), stdin=subprocess.PIPE)
    assert writer.stdin is not None
    writer.stdin.write(new[: len(new) // 2].encode())
    writer.stdin.flush()
    deadline = time.monotonic() + 30
    while not any(".tmp." in name for name in listing(host)):  # half of it is on the host
        assert time.monotonic() < deadline
        time.sleep(0.05)
    if how == "killed":
        writer.kill()
    writer.stdin.close()
    writer.wait(timeout=30)
    deadline = time.monotonic() + 15
    while listing(host) != [".env.staging"]:
        assert time.monotonic() < deadline, listing(host)
        time.sleep(0.05)
    assert files.read(remote, PATH) == "OLD=1\n"
    if how == "closed":
        assert writer.returncode == 4, "the checksum refused the short content"
    # The next write goes through.
    files.write_atomic(remote, PATH, new)
    content = files.read(remote, PATH)
    assert content is not None and hashlib.sha256(content.encode()).digest() == hashlib.sha256(new.encode()).digest()
