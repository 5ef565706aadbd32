"""./dev platform [start|stop|status]: the production platform as local processes (see stack.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ultra_ops.engine.errors import UltraOpsError
from ultra_ops.platform.instance import PLATFORM_HOME
from ultra_ops.platform.stack import Platform

DEFAULT_HOME = PLATFORM_HOME
# Each daemon beats every few seconds; Dagster's UI calls a daemon unhealthy after 60 s of silence.
STALE_HEARTBEAT_S = 60


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev platform", description=__doc__)
    parser.add_argument("command", choices=("start", "stop", "status"), nargs="?", default="status")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="pid, log and instance files")
    parser.add_argument("--port", type=int, help="the UI's port (default 3000)")
    parser.add_argument("--code-port", type=int, help="the code server's gRPC port (default 4000)")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    platform = Platform.recorded(home) or Platform.from_environment(home)
    if args.command == "start":
        platform = Platform.from_environment(
            home, port=args.port or platform.port, code_port=args.code_port or platform.code_port
        )
    try:
        if args.command == "start":
            platform.start()
            print(
                f"platform running: UI {platform.url}, code server 127.0.0.1:{platform.code_port}, "
                f"storage postgresql://{platform.pg_user}@{platform.pg_host}/{platform.database}, "
                f"logs and pids in {home}"
            )
        elif args.command == "stop":
            stopped = platform.stop()
            print("stopped: " + (", ".join(stopped) or "nothing was running"))
        else:
            report = platform.status()
            print(json.dumps(report, indent=2))
            ages = report.get("heartbeat_age_s") or {}
            stale = not ages or max(ages.values()) > STALE_HEARTBEAT_S
            running = all(report[name] for name in ("code-server", "webserver", "daemon"))
            return 0 if running and report["location_loaded"] and not stale else 3
    except UltraOpsError as exc:
        print(f"ultra-ops platform: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
