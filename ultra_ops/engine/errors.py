"""One exception family, so callers (CLI, Dagster ops) can map failures to exit codes.

InputError (exit 2) means the operator asked for something invalid and nothing was touched.
OperationError (exit 1) means a valid request failed while it ran.
"""

from __future__ import annotations


class UltraOpsError(Exception):
    """Base class of every error ultra_ops raises on purpose."""

    exit_code = 1


class InputError(UltraOpsError):
    """Bad input from the operator: a tag, environment or backup id that is not acceptable."""

    exit_code = 2


class ConfigError(InputError):
    """The configuration file is unreadable or wrong. Names file, key and reason."""

    def __init__(self, path: object, key: str, reason: str) -> None:
        self.path = str(path)
        self.key = key
        self.reason = reason
        where = f"{self.path}: {key}" if key else self.path
        super().__init__(f"config error in {where}: {reason}")


class OperationError(UltraOpsError):
    """A valid operation failed while it ran."""


class LockHeldError(OperationError):
    """Another operation holds the environment's lock."""


class BackupError(OperationError):
    """A backup could not be written, read or trusted."""


class IntegrityError(BackupError):
    """A backup's files do not match its manifest; nothing was changed."""


class VerificationFailed(OperationError):
    """At least one verification check failed."""


class RuntimeFailure(OperationError):
    """Starting, stopping or building the environment's services failed."""


class CommandFailed(OperationError):
    """An external command exited non-zero."""
