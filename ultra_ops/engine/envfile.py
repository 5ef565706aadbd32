"""The application's `.env.<environment>` file: deployed state, read and updated in place.

An env file is a regular, readable UTF-8 file of `KEY=value` lines (`export KEY=value`, quoted
values, `#` comments and blank lines too). Anything else is an InputError naming the file, the
line and the key where there is one, never the value: the file holds secrets.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from pathlib import Path

from ultra_ops.engine.errors import InputError
from ultra_ops.engine.files import private_dir

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXPORT = re.compile(r"^export\s+")
_BOM = b"\xef\xbb\xbf"
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def read_env_file(path: os.PathLike[str] | str) -> dict[str, str]:
    """Parse a dotenv file (KEY=VALUE lines, # comments, optional quotes). Missing file: {}."""
    p = Path(path)
    data = read_env_bytes(p)
    if data is None:
        return {}
    return parse_env_text(decode_env_file(p, data), source=p)


def read_env_bytes(path: Path) -> bytes | None:
    """The env file's bytes, None if there is none (a first deploy). InputError if it is anything
    but a regular file this process can read: a FIFO is never opened for a blocking read (it would
    wait for a writer forever), a directory or a device is never read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise InputError(f"env file {path}: is a symbolic link to a file that does not exist") from None
        return None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    _require_regular(path, st.st_mode)
    try:
        # O_NONBLOCK: should the path be swapped for a FIFO after the stat, open() still returns.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        _require_regular(path, os.fstat(fd).st_mode)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _require_regular(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise InputError(f"env file {path}: is {kind}, not a regular file of KEY=value lines")


def _unreadable(path: Path, exc: OSError) -> InputError:
    reason = {
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOTDIR: "a folder on its path is a file",
        errno.ELOOP: "too many symbolic links",
    }.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return InputError(f"env file {path}: cannot be read ({reason})")


def parse_env_text(text: str, source: os.PathLike[str] | str = "text") -> dict[str, str]:
    """The KEY=VALUE pairs of a dotenv text; InputError naming `source` and the line (and its key,
    never its value) for a line that is none of: blank, `# comment`, `KEY=value`, `export KEY=value`."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        key, eq, value = _EXPORT.sub("", line).partition("=")
        key = key.strip()
        if "\0" in raw:  # in a comment too: no program reads a NUL as the editor showed it
            where = f" (key {key})" if eq and _KEY.fullmatch(key) else ""
            raise InputError(f"env file {source}: line {number}{where} contains a NUL byte")
        if not line or line.startswith("#"):
            continue
        if not eq:
            raise InputError(f"env file {source}: line {number} is not KEY=value (no '=')")
        if not key:
            raise InputError(f"env file {source}: line {number} has no key before '='")
        if not _KEY.fullmatch(key):
            # The text before '=' is not echoed: a pasted secret could be there.
            raise InputError(
                f"env file {source}: line {number}: the key is not a variable name "
                "(letters, digits and '_', not starting with a digit, no spaces)"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def decode_env_file(path: Path, data: bytes) -> str:
    """The env file's text (a leading byte order mark dropped); InputError naming the file and the
    line (and its key) if it is not UTF-8."""
    data = data.removeprefix(_BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        key = _EXPORT.sub("", data[start : exc.start].decode("utf-8", "replace").strip()).partition("=")
        where = f" (key {key[0].strip()})" if key[1] and _KEY.fullmatch(key[0].strip()) else ""
        raise InputError(f"env file {path}: line {line}{where} is not UTF-8 text; save it as UTF-8") from None


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file so that readers see the old or the new content, never a half-written one.
    A file rewritten keeps its owner: root on the host updating an env file that the platform's
    run containers (uid 10001) read must not take it away from them."""
    private_dir(path.parent)
    owner = _owner(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _owner(path: Path) -> tuple[int, int] | None:
    """The uid and gid to give the new file: the old one's, when this process may give them."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid()) or os.geteuid() != 0:
        return None
    return st.st_uid, st.st_gid


def with_values(text: str, values: dict[str, str]) -> str:
    """Env file text with keys set, every other line (comments, order) kept; new keys at the end."""
    for key, value in values.items():
        if not _KEY.fullmatch(key):
            raise InputError(f"env file key {key!r} is not a valid variable name")
        if "\n" in value or "\r" in value:
            raise InputError(f"env file value for {key} contains a line break")
        if "\0" in value:
            raise InputError(f"env file value for {key} contains a NUL byte")
    pending = dict(values)
    out = []
    for line in text.splitlines():
        key = _EXPORT.sub("", line.split("=", 1)[0].strip()).strip() if "=" in line else None
        if key in pending and not line.lstrip().startswith("#"):
            out.append(f"{key}={pending.pop(key)}")
        else:
            out.append(line)
    out += [f"{k}={v}" for k, v in pending.items()]
    return "\n".join(out) + "\n"


def update_env_file(path: Path, values: dict[str, str]) -> None:
    """Set keys in the env file, keeping every other line (comments, order) as it was."""
    data = read_env_bytes(path)
    text = "" if data is None else decode_env_file(path, data)
    parse_env_text(text, source=path)  # a file that is not an env file is refused, not rewritten
    new = with_values(text, values)
    mode = path.stat().st_mode & 0o777 if data is not None else 0o600
    write_atomic(path, new.encode(), mode=mode)
