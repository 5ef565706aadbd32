"""Launch forms: the typed run config of the release jobs, as the UI's launchpad shows it.

The environment is not a field: it is the run's partition, picked from a list in the launchpad.
"""

import enum
from typing import Any

from dagster import Config
from pydantic import Field

from ultra_ops.engine.settings import ENVIRONMENT_NAMES

# The environment as a decision form's field: a list to pick from (not the config's Environment).
EnvironmentName = enum.Enum("EnvironmentName", {name: name for name in ENVIRONMENT_NAMES})


class DeployConfig(Config):
    tag: str | None = Field(
        default=None,
        description="Release tag: v + semantic version, e.g. v1.2.3. Pre-filled with the version this "
        "environment's next release tick would deploy (as `ultra-ops calendar` shows it), never one older "
        "than or equal to what runs there; empty when there is none, and launching then fails saying why. "
        "Required outside development; empty on development deploys main as v0.0.0-dev.<timestamp>. "
        "Checked when the run starts: an older version than the running one is refused (see allow_downgrade).",
    )
    skip_tests: bool = Field(default=False, description="Skip the test command (not recommended for production)")
    skip_build: bool = Field(default=False, description="Skip building images")
    compose_file: str | None = Field(default=None, description="A custom Docker Compose file")
    registry: str | None = Field(default=None, description="Push images to this registry")
    emergency: bool = Field(
        default=False,
        description="An emergency fix: bypasses freezes, holidays and the "
        "promotion gate (never the tests, the checklist or the verification)",
    )
    allow_downgrade: bool = Field(
        default=False,
        description="Deploy a version older than the one running (refused otherwise); needs a reason, kept in "
        "the release record. A rollback to a backup is the usual way back: it restores the data of that version",
    )
    reason: str | None = Field(
        default=None,
        description="Why the emergency fix cannot wait, or why the older version must run (required with "
        "emergency or allow_downgrade; recorded)",
    )


def deploy_run_config(form: DeployConfig) -> dict[str, Any]:
    """deploy_job's run config for a filled-in form, as the CLI, the release schedules and the
    launchpad's partition defaults give it: the fields set on `form`, nothing else."""
    return {"ops": {"deploy_plan": {"config": form.model_dump(exclude_unset=True)}}}


class RollbackConfig(Config):
    backup_id: str | None = Field(default=None, description="Backup to restore; the newest when empty")


class VerifyConfig(Config):
    window: bool = Field(
        default=False,
        description="Verify over the environment's verification window "
        "([verify.window]: samples, interval, failure limit) instead of one pass",
    )


class Decision(enum.Enum):
    approve = "approve"
    rollback = "rollback"


class DecisionConfig(Config):
    environment: EnvironmentName = Field(description="The environment whose verification waits for a decision")
    decision: Decision = Field(description="approve: keep the release; rollback: roll it back now")
    by: str = Field(description="Who decides (recorded with the decision)")
    reason: str | None = Field(default=None, description="Why (recorded with the decision)")
    request_id: str | None = Field(default=None, description="The waiting verification; empty: the only one")


class ReleaseBranchConfig(Config):
    tag: str = Field(
        description="The release's version, v + semantic version X.Y.Z, e.g. v1.2.3: release/<tag> is made from main"
    )


class ChecklistConfig(Config):
    tag: str | None = Field(
        default=None,
        description="The version about to be deployed (checks that the "
        "changelog names it and its commit is on main); empty: the deployed one",
    )
