"""The services' logs of a hosted environment: rotated on the host, archived here.

The backend writes its log into a compose volume on the environment's host (`logs_volume`, the
shipped compose file's `backend-logs`). Archiving a day streams that day's rotated files here,
into the environment's log folder, and archives them with the same code as a local environment's
(maintenance/logs.py: written under a temporary name, read back, every member's size and sha256
compared, renamed into place). The originals on the host are removed last, each only when its
sha256 on the host is still the one of the copy the archive was verified against.

Why here and not on the host: the archive then keeps every guarantee of a local one, checked by
the same code, and it survives the host (an archive on the host would be lost with it, as a backup
kept there would), and the host needs nothing but Docker. A crash at any point loses no line: until
the last step the originals are on the host; a copy left here is fetched again (the same bytes)
and archived by the next run.

The volume is read through a short-lived container of the image that uses it (`docker run --rm
--network none -v VOLUME:/logs`): the ssh user is in the docker group, not root, and the volume's
folder under /var/lib/docker is root's.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import tarfile
import tempfile
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from ultra_ops.engine.errors import OperationError
from ultra_ops.engine.files import fsync_dir, private_dir
from ultra_ops.engine.hosts.ssh import SshHost
from ultra_ops.engine.maintenance.logs import ArchiveReport, archive_logs
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment

_MOUNT = "/logs"
_DOCKER_S = 120.0
_STREAM_S = 3600.0


class HostLogs:
    """The environment's log volume on its host, read and changed through `docker run`."""

    def __init__(self, env: Environment, *, redact: Redactor | None = None, log: Log | None = None) -> None:
        if env.host is None:
            raise ValueError(f"environment {env.name} has no host: its logs are here")
        self.env = env
        self.host = SshHost.for_environment(env, redact=redact or Redactor.for_environment(env))
        self.log = log or NullLog()
        self.project = env.compose_project or f"ultra-{env.name}"
        self._where: tuple[str, str] | None = None

    def volume_and_image(self) -> tuple[str, str] | None:
        """The log volume's name on the host, and an image to read it with (that of a container
        using it); None when the host has no such volume (never deployed to)."""
        if self._where is None:
            name = self.env.host.logs_volume  # type: ignore[union-attr]
            volumes = self._docker(
                [
                    "volume",
                    "ls",
                    "-q",
                    "--filter",
                    f"label=com.docker.compose.project={self.project}",
                    "--filter",
                    f"label=com.docker.compose.volume={name}",
                ]
            ).split()
            if not volumes:
                return None
            images = self._docker(["ps", "-a", "--filter", f"volume={volumes[0]}", "--format", "{{.Image}}"]).split()
            if not images:
                return None
            self._where = (volumes[0], images[0])
        return self._where

    def _docker(self, args: Sequence[str], **kwargs: object) -> str:
        return self.host.run(["docker", *args], timeout=_DOCKER_S, **kwargs).stdout  # type: ignore[arg-type]

    def _in_volume(self, script: str, *, stdout_path: Path | None = None, read_only: bool = False) -> str:
        """Run `sh -c script` in a container with the volume at /logs (no network)."""
        where = self.volume_and_image()
        assert where is not None
        volume, image = where
        mount = f"{volume}:{_MOUNT}" + (":ro" if read_only else "")
        args = ["docker", "run", "--rm", "--network", "none", "-v", mount, "--entrypoint", "sh", image, "-c", script]
        timeout = _STREAM_S if stdout_path is not None else _DOCKER_S
        return self.host.run(args, timeout=timeout, stdout_path=stdout_path).stdout

    def rotate(self) -> list[str]:
        """Rename every non-empty `<name>.log` on the host to `<name>.log.<day last written>`, as
        rotate_logs does here (a second rotation the same day appends to the day's file)."""
        if self.volume_and_image() is None:
            return []
        listing = self._in_volume(
            f'cd {_MOUNT} && for f in *.log; do [ -s "$f" ] && stat -c \'%Y %n\' "$f"; done; true'
        )
        steps, rotated = [], []
        for line in listing.splitlines():
            mtime, _, name = line.partition(" ")
            if not mtime.isdigit() or "/" in name or not name.endswith(".log"):
                continue
            target = f"{name}.{datetime.fromtimestamp(int(mtime)).date():%Y%m%d}"
            src, dst = shlex.quote(name), shlex.quote(target)
            steps.append(f"if [ -e {dst} ]; then cat {src} >> {dst} && rm {src}; else mv {src} {dst}; fi")
            rotated.append(target)
        if steps:
            self._in_volume(f"cd {_MOUNT} && set -e && " + " && ".join(steps) + " && sync")
            self.log.info(f"rotated on {self.host.where}: {', '.join(rotated)}")
        return rotated

    def fetch(self, day: date) -> dict[str, str]:
        """Day D's rotated logs streamed from the host into the log folder; name -> sha256, each
        checked against the sha256 the host computed of its original."""
        if self.volume_and_image() is None:
            return {}
        pattern = f"*.log.{day:%Y%m%d}"
        sums = self._in_volume(f'cd {_MOUNT} && for f in {pattern}; do [ -f "$f" ] && sha256sum "$f"; done; true')
        expected = {}
        for line in sums.splitlines():
            digest, _, name = line.partition("  ")
            if len(digest) == 64 and name and "/" not in name:
                expected[name] = digest
        if not expected:
            return {}
        folder = private_dir(self.env.log_dir)
        names = " ".join(shlex.quote(n) for n in sorted(expected))
        with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
            stream = Path(tmp) / "logs.tar"
            self._in_volume(f"cd {_MOUNT} && tar -cf - {names}", stdout_path=stream, read_only=True)
            with tarfile.open(stream) as tar:
                for member in tar:
                    if member.name not in expected or not member.isfile():
                        continue
                    src = tar.extractfile(member)
                    assert src is not None
                    part = Path(tmp) / member.name
                    digest = hashlib.sha256()
                    with open(part, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as out:
                        while chunk := src.read(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
                        out.flush()
                        os.fsync(out.fileno())
                    if digest.hexdigest() != expected[member.name]:
                        raise OperationError(
                            f"{member.name} from {self.host.where} does not match its sha256 there; the logs stay"
                        )
                    os.utime(part, (member.mtime, member.mtime))
                    os.replace(part, folder / member.name)
            missing = [n for n in expected if not (folder / n).is_file()]
            if missing:
                raise OperationError(f"{', '.join(missing)} did not arrive from {self.host.where}; the logs stay")
        fsync_dir(folder)
        self.log.info(f"fetched {len(expected)} log files of {day} from {self.host.where}, sha256 checked")
        return expected

    def remove(self, archived: dict[str, str]) -> list[str]:
        """Remove the originals on the host whose sha256 is still the archived copy's."""
        if not archived:
            return []
        checks = "\n".join(f"{d}  {n}" for n, d in sorted(archived.items()))
        script = (
            f"cd {_MOUNT} && printf '%s\\n' {shlex.quote(checks)} > /tmp/sums && "
            "while read -r sum name; do "
            'if echo "$sum  $name" | sha256sum -c --status; then rm -f -- "$name" && echo "$name"; fi; '
            "done < /tmp/sums; sync"
        )
        removed = self._in_volume(script).split()
        kept = sorted(set(archived) - set(removed))
        if kept:
            self.log.warning(f"{', '.join(kept)} changed on {self.host.where} while archived; kept there")
        return removed


def archive_host_logs(
    env: Environment, days: Sequence[date], *, log: Log | None = None, redact: Redactor | None = None
) -> list[ArchiveReport]:
    """Rotate the logs on the host, then for each day: fetch its files here, archive them
    (verified), and only then remove the originals on the host."""
    log = log or NullLog()
    logs = HostLogs(env, redact=redact, log=log)
    logs.rotate()
    reports = []
    for day in days:
        fetched = logs.fetch(day)
        report = archive_logs(env, day, log=log)
        logs.remove({n: d for n, d in fetched.items() if n in report.files})
        reports.append(report)
    return reports
