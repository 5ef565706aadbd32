"""The verification window: after a deploy, verification repeats for a configured time, as Argo
Rollouts judges a rollout by analysis over a window instead of one look right after the start.

`samples` verifications, `interval_s` apart, the first at once. More than `failure_limit` failed
samples fail the window (it stops there: nothing later can save it); none failed passes it; some
failed but no more than the limit is inconclusive, and the environment's `on_inconclusive` says
what then: wait for a person (approve or roll back; after `decision_wait_s` roll back), or fail, or pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ultra_ops.engine.errors import VerificationFailed
from ultra_ops.engine.secrets import Log, Redactor
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.verify.decisions import abandoned_on_interrupt, ask, wait_for_decision
from ultra_ops.engine.verify.report import VerifyReport
from ultra_ops.engine.verify.runner import verify_environment

if TYPE_CHECKING:
    from ultra_ops.engine.settings.notifications import NotificationSettings

PASSED, FAILED, INCONCLUSIVE = "passed", "failed", "inconclusive"


@dataclass(frozen=True)
class WindowReport:
    environment: str
    outcome: str  # passed | failed | inconclusive (before any decision)
    samples: tuple[VerifyReport, ...]
    planned: int
    interval_s: float
    failure_limit: int
    decision: dict[str, Any] | None = None  # the DecisionRecord of an inconclusive window

    @property
    def failed_samples(self) -> int:
        return sum(1 for s in self.samples if not s.ok)

    @property
    def ok(self) -> bool:
        """Whether the release may stay: passed, or inconclusive and approved (or let pass by config)."""
        if self.outcome == PASSED:
            return True
        if self.outcome == INCONCLUSIVE:
            return self.decision is None or self.decision.get("decision") == "approve"
        return False

    @property
    def last(self) -> VerifyReport:
        return self.samples[-1]

    def summary(self) -> str:
        text = (
            f"window {self.outcome}: {self.failed_samples} of {len(self.samples)} samples failed "
            f"(limit {self.failure_limit}, {self.planned} planned {self.interval_s:g}s apart)"
        )
        failing = next((s for s in reversed(self.samples) if not s.ok), None)
        if failing is not None:
            text += f"; last failure: {failing.summary()}"
        if self.decision and self.decision.get("decision"):
            text += f"; {self.decision['decision']} decided by {self.decision['decided_by']}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "outcome": self.outcome,
            "ok": self.ok,
            "summary": self.summary(),
            "planned": self.planned,
            "interval_s": self.interval_s,
            "failure_limit": self.failure_limit,
            "failed_samples": self.failed_samples,
            "decision": self.decision,
            "samples": [s.to_dict() for s in self.samples],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowReport:
        return cls(
            environment=str(data["environment"]),
            outcome=str(data["outcome"]),
            samples=tuple(VerifyReport.from_dict(s) for s in data["samples"]),
            planned=int(data["planned"]),
            interval_s=float(data["interval_s"]),
            failure_limit=int(data["failure_limit"]),
            decision=data.get("decision"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        lines = [f"{'SAMPLE':<7} {'STARTED':<25} {'STATUS':<7} SUMMARY"]
        for i, s in enumerate(self.samples, 1):
            lines.append(f"{i:<7} {s.started_at:<25} {'ok' if s.ok else 'FAIL':<7} {s.summary()}")
        return "\n".join([*lines, "", "last sample:", self.last.table(), "", self.summary()])


def verify_window(
    env: Environment,
    *,
    redact: Redactor,
    log: Log,
    on_sample: Callable[[VerifyReport], None] | None = None,
    samples: int | None = None,
) -> WindowReport:
    """Take the window's samples (`samples` overrides the config's count) and judge them."""
    w = env.verify.window
    planned = samples or w.samples
    taken: list[VerifyReport] = []
    start = time.monotonic()
    for i in range(planned):
        if i:
            # Samples keep their schedule: a slow sample shortens the next wait, never the window.
            time.sleep(max(0.0, start + i * w.interval_s - time.monotonic()))
        report = verify_environment(env, redact=redact, log=log)
        taken.append(report)
        log.info(
            f"verification window of {env.name}: sample {i + 1} of {planned} "
            f"{'passed' if report.ok else 'FAILED'}: {report.summary()}"
        )
        if on_sample is not None:
            on_sample(report)
        if sum(1 for s in taken if not s.ok) > w.failure_limit:
            break
    failed = sum(1 for s in taken if not s.ok)
    outcome = FAILED if failed > w.failure_limit else (PASSED if failed == 0 else INCONCLUSIVE)
    return WindowReport(env.name, outcome, tuple(taken), planned, w.interval_s, w.failure_limit)


def settle(
    env: Environment,
    window: WindowReport,
    *,
    request_id: str,
    version: str | None,
    run_id: str | None,
    notifications: NotificationSettings,
    log: Log,
) -> WindowReport:
    """An inconclusive window as the environment's on_inconclusive says: wait for a person's decision
    (recorded with who made it; the webhook of `notifications` tells who should decide), or fail, or
    pass. Other windows come back as they are."""
    if window.outcome != INCONCLUSIVE:
        return window
    how = env.verify.window.on_inconclusive
    if how == "pass":
        log.warning(f'{window.summary()}: passed as on_inconclusive = "pass" says')
        return window
    if how == "fail":
        return replace(window, decision={"decision": "rollback", "decided_by": "config (on_inconclusive)"})
    wait_s = env.verify.window.decision_wait_s
    # From the moment the request exists, an interrupt closes it (the deploy rolls back).
    with abandoned_on_interrupt(env, request_id):
        record = ask(env, request_id, version=version, run_id=run_id, summary=window.summary())
        _tell(env, window, record.id, version, notifications, log)
        log.warning(
            f"{window.summary()}. Waiting up to {wait_s:g}s for a decision: "
            f"ultra-ops verify --environment {env.name} --decide approve|rollback --by NAME "
            f"(or verification_decision_job in the UI); then it rolls back. Request {record.id}."
        )
        record = wait_for_decision(env, request_id, wait_s, log=log)
    log.info(f"{record.decision} decided by {record.decided_by} (launched by {record.launched_by or '-'})")
    return replace(window, decision=record.to_dict())


def _tell(
    env: Environment,
    window: WindowReport,
    request_id: str,
    version: str | None,
    notifications: NotificationSettings,
    log: Log,
) -> None:
    """Whoever decides must learn that someone should: the webhook, where one is configured."""
    from ultra_ops.engine.notify.webhook import message, send

    text = (
        f"verification of {version or 'the release'} is inconclusive and waits for a decision: "
        f"ultra-ops verify --environment {env.name} --decide approve|rollback --by NAME"
    )
    body = message(
        "decision_needed",
        env.name,
        text,
        {
            "request": request_id,
            "summary": window.summary(),
            "rolls back after": f"{env.verify.window.decision_wait_s:g}s",
        },
    )
    send(notifications, body, redact=Redactor.for_environment(env), log=log)


def verify_window_or_fail(
    env: Environment,
    failure: str,
    *,
    log: Log,
    redact: Redactor,
    request_id: str,
    version: str | None = None,
    run_id: str | None = None,
    notifications: NotificationSettings,
    on_sample: Callable[[VerifyReport], None] | None = None,
    on_window: Callable[[WindowReport], None] | None = None,
) -> WindowReport:
    """The window, settled, handed to `on_window`; VerificationFailed("<failure>: <summary>") unless it
    passed or a person approved it."""
    window = verify_window(env, redact=redact, log=log, on_sample=on_sample)
    window = settle(
        env, window, request_id=request_id, version=version, run_id=run_id, notifications=notifications, log=log
    )
    if on_window is not None:
        on_window(window)
    if not window.ok:
        raise VerificationFailed(f"{failure}: {redact(window.summary())}")
    return window
