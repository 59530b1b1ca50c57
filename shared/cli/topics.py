"""`genre topics create|list`: the pipeline's topics, created by code with explicit settings."""

from __future__ import annotations

import argparse
import json

from shared.cli import EXIT_ENVIRONMENT, EXIT_OK, CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "topics",
        help="create or list the pipeline's Kafka topics",
        description="Create every topic of the pipeline (idempotent) with explicit partitions, "
        "retention, max.message.bytes and compaction (shared/topics.py), or list what the broker has.",
    )
    tsub = p.add_subparsers(dest="topics_command", metavar="ACTION")
    c = tsub.add_parser("create", help="create missing topics; grow short ones; report config drift")
    c.add_argument("--partitions", type=int, default=None,
                   help="partitions per topic (default: GENRE_TOPIC_PARTITIONS or 12)")
    c.add_argument("--no-increase", action="store_true",
                   help="only report topics with fewer partitions than configured")
    c.add_argument("--fix-configs", action="store_true",
                   help="set configs that differ from the spec on existing topics")
    c.add_argument("--wait", type=float, default=15.0, metavar="S", help="seconds to wait for the broker (default 15)")
    c.set_defaults(func=run_create)
    ls = tsub.add_parser("list", help="list topics with partitions and the configs the spec sets")
    ls.add_argument("--all", action="store_true", help="include internal topics (__consumer_offsets ...)")
    ls.add_argument("--json", action="store_true", help="one JSON object per topic")
    ls.add_argument("--wait", type=float, default=15.0, metavar="S", help="seconds to wait for the broker (default 15)")
    ls.set_defaults(func=run_list)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _settings(partitions: int | None = None):
    from shared.settings import Settings

    return Settings.from_env(**({"partitions": partitions} if partitions else {}))


def run_create(args: argparse.Namespace) -> int:
    from shared import kafka_io
    from shared.topics import ensure_topics

    settings = _settings(args.partitions)
    try:
        kafka_io.wait_for_broker(settings, timeout=args.wait)
        report = ensure_topics(settings, increase_partitions=not args.no_increase, fix_configs=args.fix_configs)
    except kafka_io.KafkaIOError as exc:
        raise CliError(str(exc), EXIT_ENVIRONMENT) from None
    for line in report.lines():
        print(line)
    return EXIT_OK if not report.problems else EXIT_ENVIRONMENT


def run_list(args: argparse.Namespace) -> int:
    from shared import kafka_io
    from shared.topics import list_topics

    settings = _settings()
    try:
        kafka_io.wait_for_broker(settings, timeout=args.wait)
        topics = list_topics(settings, include_internal=args.all)
    except kafka_io.KafkaIOError as exc:
        raise CliError(str(exc), EXIT_ENVIRONMENT) from None
    for t in topics:
        if args.json:
            print(json.dumps(t))
        else:
            cfg = " ".join(f"{k}={v}" for k, v in sorted(t["configs"].items()))
            print(f"{t['name']:<28} {t['partitions']:>3} partitions  {cfg}")
    if not topics and not args.json:
        print("no topics (create them with: genre topics create)")
    return EXIT_OK
