"""The application's `.env.<environment>` file: deployed state, read and updated in place."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ultra_ops.engine.errors import InputError
from ultra_ops.engine.files import private_dir

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def read_env_file(path: os.PathLike[str] | str) -> dict[str, str]:
    """Parse a dotenv file (KEY=VALUE lines, # comments, optional quotes). Missing file: {}."""
    try:
        text = decode_env_file(Path(path), Path(path).read_bytes())
    except FileNotFoundError:
        return {}
    return parse_env_text(text)


def parse_env_text(text: str) -> dict[str, str]:
    """The KEY=VALUE pairs of a dotenv text."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def decode_env_file(path: Path, data: bytes) -> str:
    """The env file's text; InputError naming the file and the line if it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"env file {path}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8"
        ) from None


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file so that readers see the old or the new content, never a half-written one."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def with_values(text: str, values: dict[str, str]) -> str:
    """Env file text with keys set, every other line (comments, order) kept; new keys at the end."""
    for key, value in values.items():
        if not _KEY.fullmatch(key):
            raise InputError(f"env file key {key!r} is not a valid variable name")
        if "\n" in value or "\r" in value:
            raise InputError(f"env file value for {key} contains a line break")
    pending = dict(values)
    out = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip().removeprefix("export ").strip() if "=" in line else None
        if key in pending and not line.lstrip().startswith("#"):
            out.append(f"{key}={pending.pop(key)}")
        else:
            out.append(line)
    out += [f"{k}={v}" for k, v in pending.items()]
    return "\n".join(out) + "\n"


def update_env_file(path: Path, values: dict[str, str]) -> None:
    """Set keys in the env file, keeping every other line (comments, order) as it was."""
    text = decode_env_file(path, path.read_bytes()) if path.exists() else ""
    new = with_values(text, values)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    write_atomic(path, new.encode(), mode=mode)
