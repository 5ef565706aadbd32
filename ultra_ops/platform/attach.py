"""A command on the platform's host records its runs on the platform's instance, without set-up.

While `./dev platform` runs, `ultra-ops …` (and the document's scripts, which call it) with no
DAGSTER_HOME records on the platform's instance: the home it started from and the PostgreSQL it
recorded in platform.json (the password, never written down, comes from DAGSTER_PG_PASSWORD as for
the platform itself). DAGSTER_HOME naming a platform's home gets the DAGSTER_PG_* it lacks the same
way. Anything else is left alone: runs then go to DAGSTER_HOME, else .dagster_home.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from ultra_ops.platform.instance import PLATFORM_HOME
from ultra_ops.platform.stack import SERVICES, Platform

PG_VARIABLES = ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


def running_platform(home: Path = PLATFORM_HOME) -> Platform | None:
    """The platform started from `home`, when one of its processes runs."""
    platform = Platform.recorded(home)
    if platform is None or not any(platform.pid(name) for name in SERVICES):
        return None
    return platform


def platform_environment(environ: Mapping[str, str], home: Path = PLATFORM_HOME) -> dict[str, str]:
    """The variables to add so this process records its runs on the platform's instance: DAGSTER_HOME
    (when unset and the platform of `home` runs) and the DAGSTER_PG_* not set already; {} otherwise."""
    named = environ.get("DAGSTER_HOME")
    if named:
        platform = Platform.recorded(Path(named))
    else:
        platform = running_platform(home)
    if platform is None:
        return {}
    values = {key: value for key, value in platform.env().items() if key in PG_VARIABLES}
    added = {key: value for key, value in values.items() if key not in environ}
    if not named:
        added["DAGSTER_HOME"] = str(platform.home)
    return added


def attach(environ: os._Environ | dict[str, str] = os.environ, home: Path = PLATFORM_HOME) -> dict[str, str]:
    """Point this process at the platform's instance where platform_environment says so; what it set."""
    added = platform_environment(environ, home)
    environ.update(added)
    return added


def main() -> int:
    """`./dev ui`: the home to run `dagster dev` on, printed; none while the platform runs, whose UI
    is the one to use (a second daemon on its instance would run every schedule twice)."""
    from ultra_ops.defs.shared.launch import ensure_dagster_home

    platform = None if os.environ.get("DAGSTER_HOME") else running_platform()
    if platform is not None:
        print(f"the platform runs ({platform.home}): its UI is {platform.url}", file=sys.stderr)
        return 3
    print(ensure_dagster_home())
    return 0


if __name__ == "__main__":
    sys.exit(main())
