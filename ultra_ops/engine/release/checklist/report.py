"""What every checklist item shares: its status, the item and the report, the group names, and the
helpers that items use to reach git, the service and its HTTP endpoints."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ultra_ops.engine.hosts.names import as_configured
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.shell import run

httpx = lazy_module("httpx")

CODE, CONFIG, INFRA, SECURITY = "Code quality", "Configuration", "Infrastructure", "Security"
SECTIONS = (CODE, CONFIG, INFRA, SECURITY)
_GIT_TIMEOUT_S = 30.0
SEVERE = ("critical",)


class Status(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class ChecklistItem:
    section: str  # the release document's heading
    name: str
    status: Status
    evidence: str

    @property
    def ok(self) -> bool:
        return self.status != Status.FAIL

    @property
    def detail(self) -> str:
        return self.evidence

    def to_dict(self) -> dict:
        data = asdict(self)
        data["status"] = self.status.value
        return data


@dataclass(frozen=True)
class ChecklistReport:
    environment: str
    version: str | None
    items: list[ChecklistItem] = field(default_factory=list)

    @property
    def failures(self) -> list[ChecklistItem]:
        return [i for i in self.items if i.status == Status.FAIL]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        counts = {s: sum(1 for i in self.items if i.status == s) for s in Status}
        return (
            f"pre-release checklist of {self.environment} ({self.version or 'no version given'}): "
            f"{counts[Status.PASS]} pass, {counts[Status.WARN]} warn, {counts[Status.FAIL]} fail"
        )

    def table(self) -> str:
        lines = []
        for section in SECTIONS:
            lines.append(section)
            for item in (i for i in self.items if i.section == section):
                lines.append(f"  [{item.status.value.upper():<4}] {item.name}: {item.evidence}")
        lines.append(self.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "environment": self.environment,
            "version": self.version,
            "ok": self.ok,
            "items": [i.to_dict() for i in self.items],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ChecklistReport:
        items = [ChecklistItem(i["section"], i["name"], Status(i["status"]), i["evidence"]) for i in data["items"]]
        return cls(data["environment"], data.get("version"), items)


def checked(section: str, name: str, ok: bool, evidence: str, *, warn: bool = False) -> ChecklistItem:
    """Pass when ok; otherwise fail, or warn where a problem must not block."""
    return ChecklistItem(section, name, Status.PASS if ok else (Status.WARN if warn else Status.FAIL), evidence)


def not_checked(section: str, name: str, why: str) -> ChecklistItem:
    return ChecklistItem(section, name, Status.WARN, f"not checked: {why}")


def services_running(env: Environment) -> bool | None:
    """Whether all the environment's services run (None: the runtime cannot tell). One stopped is
    not running: the endpoints of a half-stopped environment are what the deploy brings back, so
    their checks warn instead of blocking it. A compose project's stores alone (a first deploy's
    database, started by init) are not the service running."""
    from ultra_ops.engine.runtimes import application, get_runtime

    try:
        services = application(get_runtime(env).status(usage=False))
    except Exception:  # noqa: BLE001 - no docker here, or the runtime cannot answer: unknown, not a failure
        return None
    return bool(services) and all(s.running for s in services)


def http_client(env: Environment) -> httpx.Client:
    return httpx.Client(timeout=env.checklist.timeout_s, follow_redirects=False, event_hooks=as_configured(env))


def git(repo: Path, *args: str) -> tuple[int, str]:
    done = run(["git", "-C", str(repo), *args], timeout=_GIT_TIMEOUT_S, check=False)
    return done.returncode, done.stdout


def stopped_item(env: Environment, section: str, name: str, running: bool | None) -> ChecklistItem | None:
    if running is False:
        return not_checked(
            section,
            name,
            f"{env.name}'s services are not all running (a first deploy, stopped, or half stopped): "
            "the verification after the deploy checks them",
        )
    return None
