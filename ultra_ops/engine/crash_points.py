"""Test hooks: named points where a test kills the process, as a power cut or `kill -9` would.

ULTRA_OPS_TEST_CRASH_AT=<name> makes `crash_point(<name>)` send SIGKILL to this process;
ULTRA_OPS_TEST_PAUSE_AT=<name>=<file> makes it write <file> and wait there (up to two minutes), so
that a test sends its signal at that point, when the file appears, rather than after a guessed
sleep; or changes the world there (cuts a host's network) and removes <file> to let it go on.
The swap phases name theirs (swap.py); the process runtime names `stopped:<service>` and
`started:<service>` after each service it stops or starts, so a test can catch an environment half
stopped or half started; `locked` is just after a run took an environment's lock and marked
itself, and the CLI's progress names `step:<step>` at each step's start, between two steps.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

CRASH_ENV = "ULTRA_OPS_TEST_CRASH_AT"
PAUSE_ENV = "ULTRA_OPS_TEST_PAUSE_AT"
_PAUSE_S = 120.0


def crash_point(name: str, *, interrupted: Callable[[], bool] | None = None) -> None:
    """Test hook: ULTRA_OPS_TEST_CRASH_AT=<name> kills this process here with SIGKILL;
    ULTRA_OPS_TEST_PAUSE_AT=<name>=<file> writes <file> and waits here for a signal. `interrupted`:
    where the signal does not raise (the orchestrator holds it back between steps), the wait ends
    when this says one came."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    point, _, path = os.environ.get(PAUSE_ENV, "").partition("=")
    if point == name and path:
        Path(path).write_text(str(os.getpid()))
        deadline = time.monotonic() + _PAUSE_S
        while time.monotonic() < deadline and not (interrupted and interrupted()) and os.path.exists(path):
            time.sleep(0.05)
