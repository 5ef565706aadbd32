"""Test hooks: named points where a test kills the process, as a power cut or `kill -9` would.

ULTRA_OPS_TEST_CRASH_AT=<name> makes `crash_point(<name>)` send SIGKILL to this process. The swap
phases name theirs (swap.py); the process runtime names `stopped:<service>` after each service it
stops, so a test can leave an environment half stopped.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "ULTRA_OPS_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    """Test hook: ULTRA_OPS_TEST_CRASH_AT=<name> kills this process here with SIGKILL."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
