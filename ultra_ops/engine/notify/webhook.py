"""Sending a notification: the Slack-compatible body, retries with a timeout, redaction.

A notification never fails what it reports on: send() returns whether it was delivered and logs
why not. Its text goes through the redactor, and the webhook URL (a secret) is masked too.
"""

from __future__ import annotations

import time

from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings.notifications import NotificationSettings

httpx = lazy_module("httpx")

EVENTS = (
    "deploy",
    "rollback",
    "verification_failed",
    "production_skipped",
    "backup_failed",
    "backup_stale",
    "decision_needed",
)
_ICONS = {
    "deploy": ":rocket:",
    "rollback": ":rewind:",
    "verification_failed": ":rotating_light:",
    "decision_needed": ":raising_hand:",
    "production_skipped": ":calendar:",
    "backup_failed": ":floppy_disk:",
    "backup_stale": ":hourglass:",
}


def message(event: str, environment: str, text: str, fields: dict[str, str] | None = None) -> dict:
    """The webhook body: Slack's `text` (what a person reads) plus fields a machine can read."""
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}")
    lines = [f"{_ICONS[event]} *{environment}*: {text}"]
    lines += [f"• {k}: {v}" for k, v in (fields or {}).items() if v]
    return {"text": "\n".join(lines), "event": event, "environment": environment, "fields": fields or {}}


def send(settings: NotificationSettings, body: dict, *, redact: Redactor, log: Log | None = None) -> bool:
    """POST the body to the webhook with retries; True when delivered, False (logged) otherwise."""
    log = log or NullLog()
    url = settings.url()
    if url is None:
        return False
    hide_url = Redactor([url])
    safe = hide_url.value(redact.value(body))
    last = ""
    for attempt in range(settings.retries + 1):
        try:
            response = httpx.post(url, json=safe, timeout=settings.timeout_s)
            if response.status_code < 300:
                return True
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        if attempt < settings.retries:
            time.sleep(min(0.5 * 2**attempt, 5.0))
    log.warning(
        hide_url(redact(f"notification {body.get('event')} for {body.get('environment')} not delivered: {last}"))
    )
    return False
