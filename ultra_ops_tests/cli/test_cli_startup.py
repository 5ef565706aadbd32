"""The console script's start-up: the garbage collector is paused until the run starts, then on."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from ultra_ops.cli import common as cli

pytestmark = pytest.mark.unit


def test_end_startup_turns_the_paused_collector_back_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_gc_paused_for_startup", True)
    gc.disable()
    try:
        cli.end_startup()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        assert not cli._gc_paused_for_startup
        gc.disable()
        cli.end_startup()  # once only: later runs of the same process (the demo) leave it alone
        assert not gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()


def test_end_startup_leaves_a_collector_it_did_not_pause_alone() -> None:
    assert gc.isenabled()
    cli.end_startup()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_console_script_pauses_the_collector_until_the_run() -> None:
    code = (
        "import gc, sys; from ultra_ops import cli; from ultra_ops.cli import common; "
        "cli.main = lambda: print(gc.isenabled(), common._gc_paused_for_startup) or 0; cli.run()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "False True\n"
