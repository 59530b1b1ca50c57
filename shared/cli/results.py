"""`genre results [--follow]`: print verdicts from the results topic, one per song."""

from __future__ import annotations

import argparse
import sys
import time

from shared.cli import EXIT_OK, CliError
from shared.cli.output import print_verdict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "results",
        help="print song verdicts from the results topic",
        description="Read the verdict topic from the beginning and print one verdict per song id "
        "(replays are de-duplicated). Without --follow, stop at the end of the topic.",
    )
    p.add_argument("--follow", "-f", action="store_true", help="keep printing verdicts as they arrive")
    p.add_argument("--json", action="store_true", help="print one verdict object per line")
    p.add_argument("--song", action="append", default=[], metavar="ID", help="only these song ids (repeatable)")
    p.add_argument("--timeout", type=float, default=0, help="with --follow: stop after this many seconds (0: never)")
    p.add_argument("--count", type=int, default=0, help="stop after this many distinct songs (0: no limit)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shared import kafka_io
    from shared.schemas import SchemaError, Verdict, decode
    from shared.settings import Settings

    settings = Settings.from_env()
    try:
        kafka_io.wait_for_broker(settings, timeout=15)
        consumer = kafka_io.make_reader(settings, settings.topic_verdicts)
    except kafka_io.KafkaIOError as exc:
        raise CliError(str(exc)) from None
    wanted = set(args.song)
    seen: dict[str, tuple] = {}
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while True:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    try:
                        v = decode(rec.value, Verdict)
                    except SchemaError as exc:
                        print(f"genre results: skipping an undecodable record at offset {rec.offset}: {exc}",
                              file=sys.stderr)
                        continue
                    if wanted and v.song_id not in wanted:
                        continue
                    ident = v.identity()
                    if v.song_id in seen:
                        if seen[v.song_id] != ident:
                            print(f"genre results: warning: song {v.song_id} has a second, different verdict",
                                  file=sys.stderr)
                        continue
                    seen[v.song_id] = ident
                    print_verdict(v, args.json)
                    if args.count and len(seen) >= args.count:
                        return EXIT_OK
            if deadline is not None and time.monotonic() > deadline:
                return EXIT_OK
            if not args.follow and not batch and kafka_io.at_end(consumer):
                return EXIT_OK
    finally:
        consumer.close()
