"""A gzip-compressed tar written and read back on every core: the log archive's format.

The tar stream is cut into chunks of a few MiB and each chunk is compressed by a worker thread into a
gzip member of its own (the compressor releases the GIL while it deflates); the members are written
in order, one after the other. Concatenated gzip members are one gzip file (RFC 1952), so `tar -xzf`
and Python's `tarfile` read the result as one compressed tar. Reading back uses the member boundaries
the writer recorded: each member is inflated by a worker (its CRC-32 and length checked), and the tar
stream they form is parsed in order, every file's size and sha256 taken on the way.

The compressor is libdeflate (the `deflate` package) when it is installed: at level 6 it writes the
same format within 1% of zlib's size for about 40% of zlib's CPU, and inflates in a third of the time.
Without it, the standard library's zlib does the same work in the same threads.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
import tarfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO

CHUNK = 4 << 20  # small enough that the last chunks balance across cores, large enough to lose no ratio
LEVEL = 6  # gzip's default: the same size as `tar -czf`
_READ = 1 << 20

Digest = tuple[int, str]  # size, sha256


def workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


CODECS = ("libdeflate", "zlib")


@functools.cache
def _libdeflate() -> ModuleType | None:
    try:
        import deflate
    except ImportError:
        return None
    return deflate


def codec(name: str | None = None) -> str:
    """The compressor to use: `name` if given (it must be installed), else libdeflate when it is."""
    if name is None:
        return "libdeflate" if _libdeflate() is not None else "zlib"
    if name not in CODECS or (name == "libdeflate" and _libdeflate() is None):
        raise ValueError(f"gzip codec {name!r} is not available")
    return name


def _gzip_member(data: bytes, level: int, codec: str) -> bytes:
    if codec == "libdeflate":
        return _libdeflate().gzip_compress(data, level)
    c = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: gzip header and CRC-32/length trailer
    return c.compress(data) + c.flush()


class _MemberWriter:
    """A write-only file object: what is written is compressed in chunks by a pool, in order to `dest`."""

    def __init__(
        self, dest: IO[bytes], pool: ThreadPoolExecutor, level: int, codec: str, chunk: int, window: int
    ) -> None:
        self.dest, self.pool, self.level, self.codec, self.chunk, self.window = dest, pool, level, codec, chunk, window
        self.buf = bytearray()
        self.pending: deque[Future[bytes]] = deque()
        self.members: list[int] = []
        self.offset = 0

    def tell(self) -> int:
        return self.offset

    def write(self, data: bytes) -> int:
        self.buf += data
        self.offset += len(data)
        if len(self.buf) >= self.chunk:
            self._submit()
        return len(data)

    def _submit(self) -> None:
        self.pending.append(self.pool.submit(_gzip_member, bytes(self.buf), self.level, self.codec))
        self.buf.clear()
        while len(self.pending) > self.window:  # bounded memory: wait for the oldest
            self._drain_one()

    def _drain_one(self) -> None:
        member = self.pending.popleft().result()
        self.dest.write(member)
        self.members.append(len(member))

    def finish(self) -> list[int]:
        if self.buf:
            self._submit()
        while self.pending:
            self._drain_one()
        return self.members


class _HashingReader:
    """A file object that hashes what is read through it (hashlib releases the GIL on large reads)."""

    def __init__(self, src: IO[bytes]) -> None:
        self.src, self.digest, self.size = src, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def result(self) -> Digest:
        return self.size, self.digest.hexdigest()


@dataclass
class Written:
    """What went into an archive: each file's size and sha256 as read, and the gzip members' lengths."""

    files: dict[str, Digest] = field(default_factory=dict)
    members: list[int] = field(default_factory=list)
    codec: str = "zlib"


AddFn = Callable[[tarfile.TarInfo, IO[bytes]], None]
FillFn = Callable[[AddFn, tarfile.TarFile], None]


def write_tar_gz(
    dest: IO[bytes],
    fill: FillFn,
    *,
    level: int = LEVEL,
    chunk: int = CHUNK,
    threads: int | None = None,
    codec_name: str | None = None,
) -> Written:
    """Write a gzip-compressed tar to `dest`; `fill(add, tar)` calls `add(tarinfo, fileobj)` per member.

    Returns every regular member's size and sha256 of the bytes that went in.
    """
    threads = threads or workers()
    written = Written(codec=codec(codec_name))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="uo-gzip") as pool:
        out = _MemberWriter(dest, pool, level, written.codec, chunk, window=2 * threads)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_READ) as tar:  # type: ignore[arg-type]

            def add(info: tarfile.TarInfo, src: IO[bytes]) -> None:
                reader = _HashingReader(src)
                tar.addfile(info, reader)  # type: ignore[arg-type]
                written.files[info.name] = reader.result()

            fill(add, tar)
        written.members = out.finish()
    return written


def add_files(paths: list[Path]) -> FillFn:
    """Regular files under their own names, with their mode, owner and mtime."""

    def fill(add: AddFn, tar: tarfile.TarFile) -> None:
        for path in paths:
            with open(path, "rb") as src:
                add(tar.gettarinfo(fileobj=src, arcname=path.name), src)

    return fill


class _Inflated:
    """A read-only file object over the archive's members, inflated ahead by the pool, in order."""

    def __init__(self, fd: int, members: list[int], pool: ThreadPoolExecutor, codec: str, window: int) -> None:
        self.fd, self.pool, self.codec, self.window = fd, pool, codec, window
        spans, offset = [], 0
        for length in members:
            spans.append((offset, length))
            offset += length
        self.spans: Iterator[tuple[int, int]] = iter(spans)
        self.pending: deque[Future[bytes]] = deque()
        self.buf, self.pos = b"", 0
        for _ in range(window):
            self._submit()

    def _submit(self) -> None:
        span = next(self.spans, None)
        if span is not None:
            self.pending.append(self.pool.submit(_inflate, self.fd, *span, self.codec))

    def read(self, size: int = -1) -> bytes:
        parts, want = [], size if size >= 0 else 1 << 62
        while want > 0:
            if self.pos >= len(self.buf):
                if not self.pending:
                    break
                self.buf, self.pos = self.pending.popleft().result(), 0
                self._submit()
            take = self.buf[self.pos : self.pos + want]
            self.pos += len(take)
            want -= len(take)
            parts.append(take)
        return b"".join(parts)


class CorruptArchive(Exception):
    """The archive does not read back as the gzip members and tar stream that were written."""


def _inflate(fd: int, offset: int, length: int, codec: str) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise CorruptArchive("archive is shorter than what was written")
    if codec == "libdeflate":
        lib = _libdeflate()
        try:
            out = lib.gzip_decompress(data)  # checks the CRC-32 and length of the trailer it reaches
        except lib.DeflateError as exc:
            raise CorruptArchive(f"gzip member at byte {offset} does not inflate ({exc})") from None
        # libdeflate ignores bytes after the trailer: the member's last 8 bytes must be that trailer.
        if data[-8:] != struct.pack("<II", lib.crc32(out), len(out) & 0xFFFFFFFF):
            raise CorruptArchive(f"gzip member at byte {offset} does not end where it was written")
        return out
    d = zlib.decompressobj(31)
    try:
        out = d.decompress(data)
    except zlib.error as exc:
        raise CorruptArchive(f"gzip member at byte {offset} does not inflate ({exc})") from None
    if not d.eof or d.unused_data:  # a truncated member, or bytes between members
        raise CorruptArchive(f"gzip member at byte {offset} does not end where it was written")
    return out


def read_tar_gz(
    path: Path, members: list[int], *, threads: int | None = None, codec_name: str | None = None
) -> dict[str, Digest]:
    """Every regular member's size and sha256, read back from `path` through the recorded gzip members."""
    threads = threads or workers()
    name = codec(codec_name)
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size != sum(members):
            raise CorruptArchive("archive size differs from what was written")
        seen: dict[str, Digest] = {}
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="uo-gunzip") as pool:
            stream = _Inflated(fd, members, pool, name, window=2 * threads)
            try:
                with tarfile.open(fileobj=stream, mode="r|", bufsize=_READ) as tar:  # type: ignore[call-overload]
                    for member in tar:
                        src = tar.extractfile(member)
                        if src is None:
                            continue
                        digest, size = hashlib.sha256(), 0
                        while data := src.read(_READ):
                            digest.update(data)
                            size += len(data)
                        seen[member.name] = (size, digest.hexdigest())
                while stream.read(_READ):  # every member inflated and its CRC checked, padding included
                    pass
            except (tarfile.TarError, EOFError) as exc:
                raise CorruptArchive(f"tar stream does not read ({type(exc).__name__})") from None
            finally:
                for pending in stream.pending:
                    pending.cancel()
        return seen
    finally:
        os.close(fd)
