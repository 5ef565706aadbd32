"""Where notifications go: the `[notifications]` table. A Slack-compatible webhook is told of
deploys, rollbacks, failed verifications, skipped production ticks and failed or stale backups.

    [notifications]
    webhook_url_env = "ULTRA_WEBHOOK_URL"   # the URL is a secret: named, never written here
    timeout_s = 5
    retries = 2
"""

from __future__ import annotations

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
    timeout = r.above_zero("timeout_s", 5.0, at_most=300, unit=" seconds")
    retries = r.positive("retries", 2, integer=True, at_most=10)
    r.finish()
    return NotificationSettings(name, timeout, retries)
