"""An environment's health URLs, and the one loop that waits until its services answer them.

Which URLs, in one order for every reader: the verify health URLs where the config names them
(`[environments.X.verify] health_urls`, the `/health?detail=true` pages that report each
component), else each service's own `health_url` from the process table. The health monitor polls
them and the compose runtime waits on them after `up`; the process runtime waits on each process's
own URL instead, because it can tell which process died.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.settings import Environment

httpx = lazy_module("httpx")

# A probe says what is still wrong ("HTTP 503", "services web, worker"), or None once it is healthy.
Probe = Callable[[], str | None]


def health_urls(env: Environment) -> list[str]:
    """The verify health URLs (detail pages), else the services' own health URLs."""
    return list(env.verify.health_urls) or [p.health_url for p in env.processes if p.health_url]


def answer(client: httpx.Client, url: str) -> str | None:
    """None when `url` answers 200, else what it answered ("HTTP 503") or why not ("ConnectError: ...")."""
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if response.status_code == 200 else f"HTTP {response.status_code}"


def wait_until_healthy(
    probes: Mapping[str, Probe],
    timeout_s: float,
    *,
    poll_s: float,
    on_healthy: Callable[[str], None] | None = None,
) -> tuple[str, str] | None:
    """Run every pending probe each `poll_s` until all are healthy (None), or `timeout_s` passed:
    then the first one still pending and what it last said ("no answer" if nothing). A probe may
    raise to end the wait at once (a process that exited will not become healthy)."""
    deadline = time.monotonic() + timeout_s
    pending = list(probes)
    last: dict[str, str] = {}
    while True:
        for name in list(pending):
            problem = probes[name]()
            if problem is None:
                pending.remove(name)
                if on_healthy is not None:
                    on_healthy(name)
            else:
                last[name] = problem
        if not pending:
            return None
        if time.monotonic() >= deadline:
            return pending[0], last.get(pending[0], "no answer")
        time.sleep(poll_s)
