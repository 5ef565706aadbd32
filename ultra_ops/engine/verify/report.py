"""The verification report: one result per check, and the table and summary an operator reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# The kinds of result, in report order: the automated checks, then the smoke tests, then
# performance verification.
KINDS = (
    "health",
    "database",
    "redis",
    "llm",
    "endpoint",
    "smoke",
    "latency",
    "resources",
    "disk",
    "database_performance",
    "llm_latency",
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    kind: str  # one of KINDS
    ok: bool
    latency_ms: float  # of the last attempt
    attempts: int
    detail: str  # short and already redacted
    blocking: bool = True  # a failure fails the verification; otherwise it is a warning
    skipped: bool = False  # not run (its secret unset, an extension missing): ok, and says why
    metrics: dict[str, float] = field(default_factory=dict)  # numbers the UI plots (p95_ms, cpu_percent ...)

    @property
    def status(self) -> str:
        if self.skipped:
            return "skip"
        if self.ok:
            return "ok"
        return "FAIL" if self.blocking else "warn"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency_ms"] = round(self.latency_ms, 1)
        d["metrics"] = {k: round(v, 3) for k, v in self.metrics.items()}
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            ok=bool(data["ok"]),
            latency_ms=float(data["latency_ms"]),
            attempts=int(data["attempts"]),
            detail=str(data["detail"]),
            blocking=bool(data.get("blocking", True)),
            skipped=bool(data.get("skipped", False)),
            metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
        )


@dataclass(frozen=True)
class VerifyReport:
    environment: str
    results: tuple[CheckResult, ...]
    started_at: str  # ISO 8601, UTC
    duration_ms: float  # wall time of the whole verification

    @property
    def ok(self) -> bool:
        # No checks at all proves nothing about the deployment, so it is not a pass.
        return bool(self.results) and all(r.ok or not r.blocking for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        """The blocking results that failed: what fails the verification."""
        return [r for r in self.results if not r.ok and r.blocking]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok and not r.blocking]

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "ok": self.ok,
            "started_at": self.started_at,
            "duration_ms": round(self.duration_ms, 1),
            "summary": self.summary(),
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerifyReport:
        """The report that to_dict() described. "ok" and "summary" are ignored: both follow from
        the results. Times come back rounded to 0.1 ms, as to_dict() wrote them."""
        return cls(
            environment=str(data["environment"]),
            results=tuple(CheckResult.from_dict(r) for r in data["results"]),
            started_at=str(data["started_at"]),
            duration_ms=float(data["duration_ms"]),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        total = len(self.results)
        if not total:
            return f"no checks configured for {self.environment}"
        failed = self.failures
        warned = f"; {len(self.warnings)} warning{'s' if len(self.warnings) != 1 else ''}" if self.warnings else ""
        if not failed:
            return f"all {total} checks passed in {self.duration_ms:.0f} ms{warned}"
        reasons = ", ".join(f"{r.name} ({r.detail})" for r in failed)
        return f"{len(failed)} of {total} checks failed: {reasons}{warned}"

    def table(self) -> str:
        header = ("CHECK", "KIND", "STATUS", "LATENCY", "ATTEMPTS", "DETAIL")
        rows = [header] + [
            (r.name, r.kind, r.status, f"{r.latency_ms:.0f} ms", str(r.attempts), r.detail) for r in self.results
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows
        ]
        return "\n".join([*lines, "", self.summary()])
