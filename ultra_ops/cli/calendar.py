"""Commands of the release calendar: approve, calendar."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from ultra_ops.cli.common import (
    ops_config,
    out,
    run_job,
    settings_of,
)


def cmd_approve(args: argparse.Namespace) -> int:
    """`approve_job`: a person's yes to a version, which scheduled production deploys wait for."""
    from ultra_ops.engine.calendar.approvals import check_approval, check_valid_from, parse_at

    settings = settings_of(args)
    env = check_approval(settings, args.environment, args.tag, args.by)
    check_valid_from(settings, parse_at(args.at), datetime.now(UTC))
    result = run_job(
        args,
        settings,
        "approve_job",
        env.name,
        ops_config("approve_release", {"tag": args.tag, "by": args.by, "at": args.at}),
        version=args.tag,
    )
    if result.success:
        out(f"{args.tag} approved for {env.name} by {args.by}")
    return 0 if result.success else 1


def cmd_calendar(args: argparse.Namespace) -> int:
    """The coming release and backup ticks, with what each would do or why it would skip."""
    from ultra_ops.engine.calendar.ticks import MAINTENANCE_SCHEDULES, upcoming

    settings = settings_of(args)
    environment = settings.environment(args.environment).name if args.environment else None
    ticks = upcoming(settings, datetime.now(UTC), args.weeks, environment)
    if not args.backups:
        ticks = [t for t in ticks if t.schedule not in MAINTENANCE_SCHEDULES]
    for tick in ticks:
        out(tick.describe())
    if not ticks:
        out("no ticks in that time")
    if args.record:
        # The same ticks and what waits for a person, as assets an operator finds in the UI.
        return 0 if run_job(args, settings, "release_calendar_job", None).success else 1
    return 0
