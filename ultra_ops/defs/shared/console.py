"""Progress for people at a terminal: one line per step and per message, no event noise.

The CLI selects this logger; runs launched from the UI keep Dagster's console logger.
"""

import logging
import sys

from dagster import DagsterEventType, InitLoggerContext, logger
from dagster._utils.interrupts import check_captured_interrupt

from ultra_ops.engine.crash_points import crash_point

_SHOWN_EVENTS = {DagsterEventType.STEP_START: "step"}


class _ProgressHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None)
        if not meta:
            return
        event = meta.get("dagster_event")
        step = meta.get("step_key") or "run"
        if event is None:
            if record.levelno < logging.INFO:
                return
            marker = "!" if record.levelno >= logging.WARNING else " "
            line = f"  {marker} {step}: {meta.get('orig_message', '')}"
        elif event.event_type in _SHOWN_EVENTS:
            line = f"-> {step}"
        else:
            return
        print(line, file=sys.stderr, flush=True)
        if event is not None:
            # Tests: killed or interrupted between two steps, where Dagster holds a signal back.
            crash_point(f"step:{step}", interrupted=check_captured_interrupt)


@logger(description="Concise step-by-step progress on stderr (used by the ultra-ops CLI)")
def progress_logger(init_context: InitLoggerContext) -> logging.Logger:
    # DEBUG: Dagster logs its step events (STEP_START) at that level; the handler picks.
    log = logging.Logger("ultra_ops.progress", level=logging.DEBUG)
    log.addHandler(_ProgressHandler())
    return log
