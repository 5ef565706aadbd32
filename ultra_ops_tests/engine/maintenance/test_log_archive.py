"""Log archives: written on every core as gzip members, read by `tar -xzf`, verified before originals go;
a range of days backfilled by `dagster asset materialize --partition-range`."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import zlib
from datetime import date, datetime
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.maintenance import targz
from ultra_ops.engine.maintenance.logs import archive_logs
from ultra_ops.engine.maintenance.targz import CODECS
from ultra_ops.engine.owners import this_process
from ultra_ops.engine.settings import load_settings
from ultra_ops_tests.support.configs import write_config, write_multi_config
from ultra_ops_tests.support.services import REPO


def _log_lines(rng: random.Random, day: str, name: str, size: int) -> bytes:
    words = "request response cache query user model token retry timeout".split()
    lines, total = [], 0
    while total < size:
        line = (
            f"{day}T10:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z INFO [{name}] "
            f"id={rng.getrandbits(48):012x} {' '.join(rng.choices(words, k=6))}\n"
        )
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def _gzip_members(data: bytes) -> int:
    count = 0
    while data:
        d = zlib.decompressobj(31)
        d.decompress(data)
        assert d.eof
        data, count = d.unused_data, count + 1
    return count


@pytest.fixture
def env(tmp_path: Path):  # noqa: ANN201
    return load_settings(write_config(tmp_path, "unused")).environment("staging")


@pytest.mark.unit
@pytest.mark.parametrize("codec", CODECS)
def test_parallel_archive_extracts_with_tar_to_identical_files(env, tmp_path: Path, codec: str) -> None:  # noqa: ANN001
    rng = random.Random(3)
    env.log_dir.mkdir(parents=True)
    contents = {}
    for name, size in (("backend", 9 << 20), ("worker", 3 << 20), ("empty", 0), ("scheduler", 1000)):
        path = env.log_dir / f"{name}.log.20261126"
        path.write_bytes(_log_lines(rng, "2026-11-26", name, size))
        contents[path.name] = path.read_bytes()
    other_day = env.log_dir / "backend.log.20261127"
    other_day.write_text("the next day\n")

    report = archive_logs(env, date(2026, 11, 26), codec=codec)
    archive = Path(report.archive)
    assert archive == env.log_dir / "archive" / "logs_20261126.tar.gz"
    assert sorted(report.files) == sorted(contents) and report.bytes_in == sum(map(len, contents.values()))
    assert _gzip_members(archive.read_bytes()) >= 3  # written in chunks, one gzip member each
    assert not any((env.log_dir / name).exists() for name in contents) and other_day.exists()
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in archive.parent.iterdir() if p.name.startswith(".")]  # no temp file left

    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(out)], check=True, timeout=60)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == contents


@pytest.mark.unit
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "append garbage"])
def test_a_corrupted_archive_is_not_accepted_and_the_originals_stay(env, monkeypatch, damage: str, codec: str) -> None:  # noqa: ANN001
    rng = random.Random(5)
    env.log_dir.mkdir(parents=True)
    contents = {}
    for name in ("backend", "worker"):
        path = env.log_dir / f"{name}.log.20261126"
        path.write_bytes(_log_lines(rng, "2026-11-26", name, 5 << 20))
        contents[path] = path.read_bytes()
    real_write = targz.write_tar_gz

    def write_then_damage(out, fill, **kwargs):  # noqa: ANN001, ANN003, ANN202 - the disk goes bad after the write
        written = real_write(out, fill, **kwargs)
        out.flush()
        fd = os.open(out.name, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if damage == "flip a byte":
                byte = os.pread(fd, 1, size // 2)
                os.pwrite(fd, bytes([byte[0] ^ 0x10]), size // 2)
            elif damage == "truncate":
                os.ftruncate(fd, size - 100)
            else:
                os.pwrite(fd, b"\x1f\x8b garbage", size)
        finally:
            os.close(fd)
        return written

    monkeypatch.setattr(targz, "write_tar_gz", write_then_damage)
    with pytest.raises(OperationError, match="logs_20261126.tar.gz does not read back"):
        archive_logs(env, date(2026, 11, 26), codec=codec)
    assert {p: p.read_bytes() for p in contents} == contents
    assert not list((env.log_dir / "archive").iterdir())  # neither an archive nor its temp file


@pytest.mark.unit
def test_a_temp_archive_left_by_a_killed_writer_is_removed(env) -> None:  # noqa: ANN001
    """kill -9 while writing leaves `.logs_D.tar.gz.tmp-PID-START` and every original; the next run
    removes the temp file of the dead writer, and only that one."""
    env.log_dir.mkdir(parents=True)
    original = env.log_dir / "backend.log.20261126"
    original.write_bytes(b"a line\n" * 1000)
    folder = env.log_dir / "archive"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = folder / f".logs_20261125.tar.gz.tmp-{dead.pid}-1"
    stale.write_bytes(b"half an archive")
    me = this_process()
    live = folder / f".logs_20261124.tar.gz.tmp-{me['pid']}-{me['start']}"  # a writer still at work
    live.write_bytes(b"being written")

    archive_logs(env, date(2026, 11, 26))
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in folder.iterdir()) == [live.name, "logs_20261126.tar.gz"]


def test_dagster_asset_materialize_partition_range(tmp_path: Path) -> None:
    """The real CLI over three days of one environment: three verified archives, only their originals gone."""
    config = write_config(tmp_path, "unused", environment="development")
    env = load_settings(config).environment("development")
    logs_dir = env.log_dir
    logs_dir.mkdir(parents=True)
    rng = random.Random(9)
    contents = {}
    for day in ("20261123", "20261124", "20261125", "20261126", "20261127"):
        for name in ("backend", "worker"):
            path = logs_dir / f"{name}.log.{day}"
            path.write_bytes(_log_lines(rng, day, name, 200_000))
            contents[path.name] = path.read_bytes()
    # Last written on the 25th: rotated beside that day's file (a second rotation that day), then archived.
    active = logs_dir / "backend.log"
    active.write_bytes(b"late lines of the 25th\n")
    stamp = datetime(2026, 11, 25, 23, 0).timestamp()
    os.utime(active, (stamp, stamp))
    output = logs_dir / "backend.out"
    output.write_text("runtime output, not a log to archive\n")
    home = tmp_path / "dagster_home"
    home.mkdir()
    environ = {**os.environ, "DAGSTER_HOME": str(home), "ULTRA_OPS_CONFIG": str(config)}

    dagster = Path(sys.executable).parent / "dagster"
    done = subprocess.run(
        [
            str(dagster),
            "asset",
            "materialize",
            "-m",
            "ultra_ops.definitions",
            "--select",
            "log_archive",
            "--partition-range",
            "2026-11-24|development...2026-11-26|development",
        ],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    archived = ("20261124", "20261125", "20261126")
    out = tmp_path / "out"
    out.mkdir()
    archive_dir = logs_dir / "archive"
    assert sorted(p.name for p in archive_dir.iterdir()) == [f"logs_{d}.tar.gz" for d in archived]
    for day in archived:
        subprocess.run(["tar", "-xzf", str(archive_dir / f"logs_{day}.tar.gz"), "-C", str(out)], check=True, timeout=60)
    expected = {n: c for n, c in contents.items() if n.rsplit(".", 1)[1] in archived}
    expected["backend.log.20261125.1"] = b"late lines of the 25th\n"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == expected
    kept = sorted(p.name for p in logs_dir.iterdir() if p.is_file())
    assert kept == [
        "backend.log.20261123",
        "backend.log.20261127",
        "backend.out",
        "worker.log.20261123",
        "worker.log.20261127",
    ]
    assert all((logs_dir / n).read_bytes() == contents[n] for n in kept if n in contents)

    with DagsterInstance.from_config(str(home)) as instance:
        events = instance.fetch_materializations(AssetKey("log_archive"), limit=10).records
    assert sorted(e.partition_key for e in events) == [f"2026-11-{d}|development" for d in (24, 25, 26)]
    assert len({e.run_id for e in events}) == 1  # one run for the range


_LAUNCH_BACKFILL = """
mutation Backfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""


def test_ui_backfill_of_three_days_in_two_environments(tmp_path: Path, dagster_home: Path) -> None:
    """The UI's backfill (GraphQL launchPartitionBackfill, a real webserver and daemon): one run per
    environment for its range of days, three verified archives each, only their originals removed."""
    from ultra_ops_tests.support.webserver import Webserver

    environments = ("development", "staging")
    config = write_multi_config(tmp_path, {e: "unused" for e in environments}, redis_prefix="unused:")
    settings = load_settings(config)
    rng = random.Random(11)
    days = ("20261124", "20261125", "20261126")
    for environment in environments:
        logs_dir = settings.environment(environment).log_dir
        logs_dir.mkdir(parents=True)
        for day in (*days, "20261127"):
            (logs_dir / f"backend.log.{day}").write_bytes(_log_lines(rng, day, environment, 100_000))
    keys = [f"2026-11-{d[-2:]}|{e}" for e in environments for d in days]
    with (
        Webserver(dagster_home, env={"ULTRA_OPS_CONFIG": str(config)}) as web,
        DagsterInstance.from_config(str(dagster_home)) as instance,
    ):
        launched = web.query(
            _LAUNCH_BACKFILL, backfillParams={"assetSelection": [{"path": ["log_archive"]}], "partitionNames": keys}
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        web.start_daemon()
        deadline = time.monotonic() + 300
        while (status := instance.get_backfill(launched["backfillId"]).status.value) in ("REQUESTED", "CANCELING"):
            assert time.monotonic() < deadline, (dagster_home / "daemon.log").read_text()[-3000:]
            time.sleep(1)
        assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (dagster_home / "daemon.log").read_text()[-3000:]
        events = instance.fetch_materializations(AssetKey("log_archive"), limit=20).records
    assert sorted(e.partition_key for e in events) == sorted(keys)
    assert len({e.run_id for e in events}) == 2  # one run per environment, each over its three days
    for environment in environments:
        logs_dir = settings.environment(environment).log_dir
        assert sorted(p.name for p in (logs_dir / "archive").iterdir()) == [f"logs_{d}.tar.gz" for d in days]
        assert sorted(p.name for p in logs_dir.glob("*.log.*")) == ["backend.log.20261127"]


@pytest.mark.unit
def test_rotating_twice_a_day_under_a_live_writer_loses_no_line(env, tmp_path: Path) -> None:  # noqa: ANN001
    """A writer that reopens its log as the sample service does (logging.WatchedFileHandler) writes
    throughout two rotations the same day; the day's archive then holds every line exactly once."""
    import logging.handlers
    import threading

    from ultra_ops.engine.maintenance.logs import rotate_logs

    env.log_dir.mkdir(parents=True)
    path = env.log_dir / "backend.log"
    handler = logging.handlers.WatchedFileHandler(path)
    logger = logging.Logger("rotation-test")
    logger.addHandler(handler)
    stop, written = threading.Event(), []

    def write() -> None:
        n = 0
        while not stop.is_set() or n < 2000:
            logger.warning("line %06d", n)
            written.append(n)
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        rotated: list[str] = []
        while len(rotated) < 2:
            rotated += rotate_logs(env) if path.exists() and path.stat().st_size > 10_000 else []
    finally:
        stop.set()
        writer.join(timeout=60)
        handler.close()
    rotated += rotate_logs(env)
    day = date.today()
    assert f"backend.log.{day:%Y%m%d}" in rotated and f"backend.log.{day:%Y%m%d}.1" in rotated

    report = archive_logs(env, day)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xzf", report.archive, "-C", str(out)], check=True, timeout=60)
    lines = [line for p in sorted(out.iterdir()) for line in p.read_text().splitlines()]
    assert sorted(int(line.split()[1]) for line in lines) == written
