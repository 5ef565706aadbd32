"""The health monitor's look at an environment: its `/health?detail=true` pages, reduced to what
changes when health changes (status codes and component statuses, never latencies), so that a
poll can be compared with the last one and nothing is recorded while nothing changed. Which URLs
it looks at is engine/health.py's `health_urls`, the same the compose runtime waits on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ultra_ops.engine.health import health_urls
from ultra_ops.engine.hosts.names import as_configured
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.verify.checks import bad_components, describe_error, expected_errors, status_ok

httpx = lazy_module("httpx")


@dataclass(frozen=True)
class HealthPoll:
    environment: str
    states: dict[str, str]  # a health URL, or "URL component", -> its state

    @property
    def healthy(self) -> bool:
        return bool(self.states) and all(state == "ok" for state in self.states.values())

    def signature(self) -> str:
        return json.dumps(self.states, sort_keys=True)

    def describe(self) -> str:
        bad = [f"{name}: {state}" for name, state in self.states.items() if state != "ok"]
        return "healthy" if self.healthy else "; ".join(bad) or "no health URL configured"


def poll_health(env: Environment, timeout_s: float) -> HealthPoll:
    states: dict[str, str] = {}
    with httpx.Client(timeout=timeout_s, follow_redirects=False, event_hooks=as_configured(env)) as client:
        for url in health_urls(env):
            try:
                response = client.get(url)
            except expected_errors() as exc:
                states[url] = describe_error(exc, timeout_s).split(":")[0]  # "cannot connect", "timeout ..."
                continue
            try:
                body = response.json()
            except ValueError:
                body = None
            status = body.get("status") if isinstance(body, dict) else None
            ok = response.status_code == 200 and (status is None or status_ok(status))
            states[url] = "ok" if ok else f"{response.status_code} {status or ''}".strip()
            if isinstance(body, dict):
                bad = set(bad_components(body))
                for key in ("checks", "components"):
                    for name, value in (body.get(key) or {}).items() if isinstance(body.get(key), dict) else ():
                        shown = value.get("status") if isinstance(value, dict) else value
                        states[f"{url} {name}"] = (
                            "ok" if not any(b.startswith(f"{name} (") for b in bad) else str(shown)
                        )
    return HealthPoll(env.name, states)
