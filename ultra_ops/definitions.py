"""The ultra_ops code location. Nothing here touches a service: loading it only builds objects."""

from dagster import Definitions

from .release.jobs import RELEASE_JOBS
from .release.resources import EnvironmentLocks, OpsSettings

defs = Definitions(
    jobs=RELEASE_JOBS,
    resources={"settings": OpsSettings(), "locks": EnvironmentLocks()},
)


def job_from_definitions(name: str):  # noqa: ANN201 - dagster's reconstructable needs a plain function
    return defs.resolve_job_def(name)
