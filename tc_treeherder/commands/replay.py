"""``tc-treeherder replay``: re-run a range of task events through the current transform and re-emit the jobs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from aiokafka.errors import KafkaError

from streams.replay.plan import ReplayUsageError, epoch_ms, parse_offsets, parse_time, select
from streams.replay.runner import Replay, ReplayOptions
from streams.shared.settings import Settings

EPILOG = """examples:
  tc-treeherder replay --since 2024-05-01T00:00Z --until 2024-05-02T00:00Z --dry-run --diff
  tc-treeherder replay --since 2024-05-01 --rejected-only --destination tc-treeherder --to tc-treeherder-staging
  tc-treeherder replay --from-offsets 0:1200,1:1180 --to-offsets 0:1300,1:1290 --project autoland

The jobs go to the jobs topic, marked "replay", and the running sinks deliver them. The live worker, its
consumer group and its tables are left alone: definitions and artifact listings are read from the tables'
changelog topics, and the Queue API is asked only for tasks the worker never saw (--no-queue forbids it).
Times are ISO 8601, UTC when no zone is given; --until and --to-offsets are exclusive.
Exit status: 0 done, 1 Kafka failed, 2 misuse. See docs/replay.md.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("range (choose times or offsets)")
    where.add_argument("--since", metavar="TIME", help="first event time (ISO 8601)")
    where.add_argument("--until", metavar="TIME", help="end time, exclusive (default: now)")
    where.add_argument("--from-offsets", metavar="OFFSETS",
                       help="OFFSET for every partition, or P:OFFSET[,P:OFFSET...] (only those partitions)")
    where.add_argument("--to-offsets", metavar="OFFSETS", help="end offsets, exclusive (default: the end)")
    what = parser.add_argument_group("what to re-emit")
    what.add_argument("--destination", action="append", default=[], metavar="NAME",
                      help="only jobs for this destination (name, or the route prefix it is named after; "
                           "repeatable; default: every enabled destination)")
    what.add_argument("--to", metavar="NAME", help="send the selected destinations' jobs to this destination "
                                                   "instead, in its message profile and through its filters")
    what.add_argument("--ignore-filters", action="store_true",
                      help="with --to: send every selected job, also those the target's projects or tiers "
                           "would not take")
    what.add_argument("--project", action="append", default=[], metavar="PROJECT",
                      help="only jobs of this project (repeatable)")
    what.add_argument("--rejected-only", action="store_true",
                      help="re-run the events of the rejected topic in the range instead of every event")
    what.add_argument("--include-ignored", action="store_true",
                      help="with --rejected-only: also re-run events that were ignored (e.g. a destination was "
                           "disabled)")
    how = parser.add_argument_group("how")
    how.add_argument("--no-queue", action="store_true",
                     help="never ask the Queue API: events of tasks missing from the tables are rejected")
    how.add_argument("--dry-run", action="store_true", help="write nothing; report what would be emitted")
    how.add_argument("--diff", action="store_true",
                     help="show how the new jobs differ from those emitted at the time")
    how.add_argument("--diff-limit", type=int, default=20, metavar="N", help="differences shown per kind (20)")


def run(args: argparse.Namespace, settings: Settings) -> int:


    try:
        by_time, by_offset = bool(args.since or args.until), bool(args.from_offsets or args.to_offsets)
        if by_time and by_offset:
            raise ReplayUsageError("give the range as times (--since/--until) or as offsets, not both")
        if not args.since and not args.from_offsets:
            raise ReplayUsageError("give the range's start: --since TIME or --from-offsets OFFSETS")
        if args.include_ignored and not args.rejected_only:
            raise ReplayUsageError("--include-ignored goes with --rejected-only")
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        if since and until and until <= since:
            raise ReplayUsageError(f"--until {args.until} is not after --since {args.since}")
        options = ReplayOptions(
            selection=select(settings, args.destination, args.to, args.project,
                             ignore_filters=args.ignore_filters),
            since_ms=epoch_ms(since) if since else None,
            until_ms=epoch_ms(until) if until else None,
            from_offsets=parse_offsets(args.from_offsets, settings.partitions) if args.from_offsets else None,
            to_offsets=parse_offsets(args.to_offsets, settings.partitions) if args.to_offsets else None,
            rejected_only=args.rejected_only,
            include_ignored=args.include_ignored,
            use_queue=not args.no_queue,
            dry_run=args.dry_run,
            diff=args.diff,
        )
    except ReplayUsageError as error:
        print(f"tc-treeherder replay: {error}", file=sys.stderr)
        return 2

    replay = Replay(settings, options)
    replay.diff_limit = max(0, args.diff_limit)
    try:
        result = asyncio.run(replay.run())
    except KafkaError as error:
        logging.getLogger("streams").error("replay stopped: Kafka: %s: %s", type(error).__name__, error)
        print("\n".join(replay.report.lines()), file=sys.stderr)
        return 1
    lines = result.report.lines()
    if not options.dry_run:
        lines.append(f"  replay id: {result.replay_id} (job records carry replay.id)")
    print("\n".join(lines + result.diff_lines))
    return 0
