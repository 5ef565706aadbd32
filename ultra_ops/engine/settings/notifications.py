"""Where notifications go: the `[notifications]` table. A Slack-compatible webhook is told of
deploys, rollbacks, failed verifications, skipped production ticks and failed or stale backups.

    [notifications]
    webhook_url_env = "ULTRA_WEBHOOK_URL"   # the URL is a secret: named, never written here
    timeout_s = 5
    retries = 2
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ultra_ops.engine.settings.table import TableReader


@dataclass(frozen=True)
class NotificationSettings:
    webhook_url_env: str | None = None
    timeout_s: float = 5.0
    retries: int = 2

    def url(self) -> str | None:
        return os.environ.get(self.webhook_url_env) or None if self.webhook_url_env else None


def read_notifications(r: TableReader | None) -> NotificationSettings:
    if r is None:
        return NotificationSettings()
    name = r.get("webhook_url_env", str, None)
    if name is not None and not name.replace("_", "").isalnum():
        raise r.fail("webhook_url_env", "must name an environment variable, not hold the URL")
    timeout = float(r.positive("timeout_s", 5.0))
    if not math.isfinite(timeout) or timeout <= 0:
        raise r.fail("timeout_s", "must be a finite number of seconds greater than 0")
    retries = r.positive("retries", 2, integer=True)
    if retries > 10:
        raise r.fail("retries", "at most 10")
    r.finish()
    return NotificationSettings(name, timeout, retries)
