"""Who hears of what the engine just did: whoever runs the code (a Dagster step records it as an
asset event of its run), however deep in a deploy or a restore it happened.

A topic is a name ("backup", "release", "decision"); listeners are per context (per thread), so
two steps running at once each hear only their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

Listener = Callable[[Any], None]

_listeners: ContextVar[tuple[tuple[str, Listener], ...]] = ContextVar("engine_listeners", default=())


@contextmanager
def heard_by(topic: str, listener: Listener) -> Iterator[None]:
    """Call `listener(payload)` for every `announce(topic, payload)` in this context."""
    token = _listeners.set((*_listeners.get(), (topic, listener)))
    try:
        yield
    finally:
        _listeners.reset(token)


def announce(topic: str, payload: Any) -> None:  # noqa: ANN401 - each topic has its own payload
    """Tell the topic's listeners. A listener's error is its own to handle: listeners log, never raise."""
    for name, listener in _listeners.get():
        if name == topic:
            listener(payload)
