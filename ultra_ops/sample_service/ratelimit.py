"""Per-client request limit for the API paths: at most N requests in any window of S seconds."""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class RateLimit:
    def __init__(self, requests: int, seconds: float) -> None:
        self.requests, self.seconds = requests, seconds
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, text: str | None) -> RateLimit | None:
        """`"20/1"`: 20 requests per second. Empty: no limit."""
        if not text:
            return None
        count, sep, window = text.partition("/")
        try:
            requests, seconds = int(count), float(window or "1")
        except ValueError:
            raise ValueError(f"ULTRA_RATE_LIMIT must look like 20/1 (requests/seconds), not {text!r}") from None
        if not sep or requests < 1 or seconds <= 0:
            raise ValueError(f"ULTRA_RATE_LIMIT must look like 20/1 (requests/seconds), not {text!r}")
        return cls(requests, seconds)

    def retry_after(self, client: str) -> int:
        """0 when this request may go ahead (and it is counted), else seconds to wait."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(client, deque())
            while seen and seen[0] <= now - self.seconds:
                seen.popleft()
            if len(seen) >= self.requests:
                return max(1, math.ceil(seen[0] + self.seconds - now))
            seen.append(now)
            return 0
