"""The service's /metrics page in Prometheus text format, counted in memory."""

from __future__ import annotations

import threading
import time
from collections import Counter

# Label values are limited to the service's own routes: a scanner's random paths must not grow
# the page without bound.
KNOWN_PATHS = frozenset(
    {
        "/health",
        "/metrics",
        "/api/v1/prompts",
        "/api/v1/version",
        "/api/v1/auth/login",
        "/api/v1/me",
        "/api/v1/prompt",
        "/api/v1/files",
    }
)


class Metrics:
    def __init__(self) -> None:
        self.started = time.time()
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, int]] = Counter()
        self._counts: Counter[str] = Counter()
        self._llm_seconds = 0.0

    def request(self, path: str, status: int) -> None:
        with self._lock:
            self._requests[(path if path in KNOWN_PATHS else "other", status)] += 1

    def count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def llm_request(self, seconds: float) -> None:
        with self._lock:
            self._llm_seconds += seconds
            self._counts["llm_requests"] += 1

    def render(self) -> str:
        with self._lock:
            requests, counts, llm_seconds = dict(self._requests), Counter(self._counts), self._llm_seconds
        lines = [
            "# HELP ultra_http_requests_total HTTP requests answered, by path and status.",
            "# TYPE ultra_http_requests_total counter",
        ]
        for (path, status), n in sorted(requests.items()):
            lines.append(f'ultra_http_requests_total{{path="{path}",status="{status}"}} {n}')
        for name, help_text in (
            ("prompts", "Prompts answered."),
            ("uploads", "Files uploaded."),
            ("rate_limited", "Requests refused by the rate limit."),
        ):
            lines += [
                f"# HELP ultra_{name}_total {help_text}",
                f"# TYPE ultra_{name}_total counter",
                f"ultra_{name}_total {counts[name]}",
            ]
        lines += [
            "# HELP ultra_llm_request_seconds Time spent waiting for the LLM provider.",
            "# TYPE ultra_llm_request_seconds summary",
            f"ultra_llm_request_seconds_sum {llm_seconds:.6f}",
            f"ultra_llm_request_seconds_count {counts['llm_requests']}",
            "# HELP ultra_process_start_time_seconds Start time of the process since the epoch.",
            "# TYPE ultra_process_start_time_seconds gauge",
            f"ultra_process_start_time_seconds {self.started:.3f}",
        ]
        return "\n".join(lines) + "\n"
