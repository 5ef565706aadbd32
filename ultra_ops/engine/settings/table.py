"""Reading one table of the config file: typed values and the checks every section shares.

Each section's reader takes a TableReader and asks it for its keys; every error is a ConfigError
naming the file, the full dotted key and the reason, and `finish` refuses the keys nobody asked for.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ultra_ops.engine.errors import ConfigError

ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The bound of a number whose reader names no tighter one: past it, a value is a typo (10**24).
ANY_COUNT = 10**9


class TableReader:
    """Typed access to one TOML table; every error names the full dotted key."""

    def __init__(self, path: Path, table: dict[str, Any], prefix: str) -> None:
        self.path, self.table, self.prefix = path, table, prefix
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.path, self.key(name), reason)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ..., *, required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.table:
            if required or default is ...:
                raise self.fail(name, "is required")
            return default
        value = self.table[name]
        # bool is an int in Python; a port of `true` is still wrong.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(name, f"expected {_kind_name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise self.fail(name, f"expected {_kind_name(kind)}, got {type(value).__name__}")
        # TOML has inf and nan; no duration, budget or count of ours means either.
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(name, f"must be a finite number, got {value}")
        return value

    def string_list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(name, list, list(default))
        if not all(isinstance(v, str) for v in value):
            raise self.fail(name, "expected a list of strings")
        return tuple(value)

    def sub(self, name: str, *, required: bool = False) -> TableReader | None:
        value = self.get(name, dict, None, required=required)
        return None if value is None else TableReader(self.path, value, self.key(name))

    def tables(self, name: str, not_a_table: str = "expected a table") -> Iterator[TableReader]:
        """The tables of a list (`[[...]]` or an inline array), each read in its turn."""
        for i, item in enumerate(self.get(name, list, [])):
            if not isinstance(item, dict):
                raise self.fail(f"{name}[{i}]", not_a_table)
            yield TableReader(self.path, item, self.key(f"{name}[{i}]"))

    def positive(
        self, name: str, default: float, *, integer: bool = False, at_most: float = ANY_COUNT, unit: str = ""
    ) -> Any:
        """A count, size or duration from 0 to `at_most` (in `unit`); the range is in the error."""
        value = self.get(name, int if integer else (int, float), default)
        if not 0 <= value <= at_most:
            raise self.fail(name, f"expected 0 to {show_number(at_most)}{unit}, got {show_number(value)}")
        return value

    def above_zero(self, name: str, default: float, *, at_most: float = ANY_COUNT, unit: str = "") -> float:
        """A duration or limit more than 0 and at most `at_most` (in `unit`)."""
        value = self.budget(name, at_most=at_most, unit=unit)
        return float(default) if value is None else value

    def budget(self, name: str, *, at_most: float = ANY_COUNT, unit: str = "") -> float | None:
        """An optional limit (milliseconds, megabytes, seconds): unset, or more than 0 and at most `at_most`."""
        value = self.get(name, (int, float), None)
        if value is not None and not 0 < value <= at_most:
            raise self.fail(
                name, f"must be greater than 0 and at most {show_number(at_most)}{unit}, got {show_number(value)}"
            )
        return float(value) if value is not None else None

    def port(self, name: str, default: int | None) -> int | None:
        value = self.get(name, int, default)
        if value is not None and not 0 < value < 65536:
            raise self.fail(name, f"{show_number(value)} is not a TCP port: expected 1 to 65535")
        return value

    def url(self, name: str, *, required: bool = True, default: str | None = None) -> str | None:
        value = self.get(name, str, default, required=required)
        if value is not None and not value.startswith(("http://", "https://")):
            raise self.fail(name, f"expected an http:// or https:// URL, got {value!r}")
        return value

    def env_var_name(self, name: str) -> str | None:
        """A key ending in `_env`: the name of the variable that holds a secret, never the secret."""
        value = self.get(name, str, None)
        if value is not None and not ENV_VAR_NAME.fullmatch(value):
            raise self.fail(name, "must name an environment variable (letters, digits and '_'), not hold a value")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


def show_number(value: float) -> str:
    """A number for an error message: 10**24 as 1e+24, not 25 digits."""
    if isinstance(value, int) and abs(value) < 10**15:
        return str(value)
    return f"{value:g}"


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def resolve_path(base: Path, value: str) -> Path:
    """A path of the config: relative to `base` (the config file's folder or the environment's root)."""
    return (base / os.path.expandvars(value)).resolve() if not os.path.isabs(value) else Path(value)


def expand_command(command: tuple[str, ...]) -> tuple[str, ...]:
    # "{python}" lets a checked-in config start the same interpreter that runs ultra_ops.
    return tuple(part.replace("{python}", sys.executable) for part in command)
