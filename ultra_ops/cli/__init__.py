"""`ultra-ops`: the release document's commands, each a run of the same Dagster job the UI launches.

Exit codes: 0 success, 1 the operation failed (a failed verification, a refused lock),
2 bad input or config (nothing was written and no run was started), 141 the reader of the output
went away (`ultra-ops releases | head -1`): the rest of the output is dropped without a word.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import NoReturn

from ultra_ops.cli import common
from ultra_ops.cli.parser import build_parser
from ultra_ops.engine.errors import UltraOpsError

__all__ = ["CLOSED_PIPE", "build_parser", "main", "run"]

# 128 + SIGPIPE: what a shell reports for any program whose reader went away (git log | head),
# neither success (the output was cut short) nor 1 (the operation itself did not fail).
CLOSED_PIPE = 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UltraOpsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_pipe()


def _closed_pipe() -> int:
    """The standard library's recipe for a closed stdout (the `signal` module's note on SIGPIPE):
    stdout goes to /dev/null, so that the output still buffered and the interpreter's last flush
    do not fail a second time with a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # a stdout with no file descriptor (a test's capture): nothing to redirect
        pass
    return CLOSED_PIPE


def _interrupt(_signo: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run() -> NoReturn:
    """The `ultra-ops` console script: main(), then exit without tearing the interpreter down.

    Dagster's module graph takes about half a second to finalize at exit, a third of a short
    command's time. Everything the command wrote is committed by now (Dagster commits each event;
    the engine fsyncs its files), so only the standard streams need flushing. The garbage collector
    is off until the run starts (end_startup).
    """
    # SIGTERM (a supervisor, `kill`) takes Ctrl-C's path: a deploy in progress rolls back first.
    signal.signal(signal.SIGTERM, _interrupt)
    common.pause_gc_for_startup()
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader went away after the last line was written
        code = _closed_pipe()
    logging.shutdown()
    os._exit(code)
