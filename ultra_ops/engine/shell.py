"""Running external commands: always an argument list, never a shell string."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ultra_ops.engine.errors import CommandFailed
from ultra_ops.engine.secrets import Redactor


def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float | None = None,
    redact: Redactor | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command; `env` is added to the current environment. Raises CommandFailed on non-zero
    exit with the tail of its output, redacted."""
    full_env = {**os.environ, **env} if env else None
    try:
        proc = subprocess.run(list(args), env=full_env, cwd=cwd, timeout=timeout,
                              capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise CommandFailed(f"command not found: {args[0]}") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{Path(args[0]).name} did not finish within {timeout:g}s") from None
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        message = f"{Path(args[0]).name} exited {proc.returncode}: " + " | ".join(tail)
        raise CommandFailed(redact(message) if redact else message)
    return proc
