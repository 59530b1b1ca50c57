"""`genre broker start|stop|status|fetch`: a local single-node Kafka (KRaft) on 127.0.0.1.

The jars come from Maven Central once (deploy/kafka/pom.xml) into $GENRE_KAFKA_HOME
(default ~/.cache/genre/kafka); the data dir defaults to $GENRE_KAFKA_HOME/data.
Exit codes: 0 done (status: running and answering), 3 java/mvn missing, the broker
failed to start, or (status) it is not running.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.cli import EXIT_ENVIRONMENT, EXIT_OK, CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker",
        help="start, stop or inspect a local single-node Kafka broker",
        description="Run Apache Kafka (KRaft, broker+controller in one JVM) on 127.0.0.1 from the "
        "official jars, resolved once with Maven into $GENRE_KAFKA_HOME (default ~/.cache/genre/kafka). "
        "Needs java 17+ and mvn.",
    )
    bsub = p.add_subparsers(dest="broker_command", metavar="ACTION")

    def data_dir_arg(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                       help="broker data directory (default: $GENRE_KAFKA_HOME/data)")

    s = bsub.add_parser("start", help="start the broker in the background (or --foreground)")
    s.add_argument("--port", type=int, default=None,
                   help="PLAINTEXT port on 127.0.0.1 (default: the data dir's previous port, else 9092)")
    data_dir_arg(s)
    s.add_argument("--foreground", action="store_true", help="run in this terminal until Ctrl-C")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait until it answers (default 120)")
    s.add_argument("--heap", default="512m", help="JVM heap limit (default 512m)")
    s.set_defaults(func=run_start)

    t = bsub.add_parser("stop", help="stop the broker (SIGTERM, then SIGKILL after --grace seconds)")
    data_dir_arg(t)
    t.add_argument("--grace", type=float, default=30.0, help="seconds to wait after SIGTERM (default 30)")
    t.set_defaults(func=run_stop)

    u = bsub.add_parser("status", help="say whether the broker runs and answers (exit 0) or not (exit 3)")
    data_dir_arg(u)
    u.add_argument("--json", action="store_true", help="print the status as a JSON object")
    u.set_defaults(func=run_status)

    f = bsub.add_parser("fetch", help="only resolve the Kafka jars into the cache (for CI images)")
    f.set_defaults(func=run_fetch)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _broker(args: argparse.Namespace, port: int | None = None, **kw: object):
    from shared.broker import LocalBroker, default_data_dir

    return LocalBroker(args.data_dir or default_data_dir(), port=port or 0, **kw)


def run_start(args: argparse.Namespace) -> int:
    from shared.broker import DEFAULT_PORT, BrokerError, ToolMissing

    try:
        broker = _broker(args, heap=args.heap)
        pid = broker.read_pid()
        if pid is not None:
            st = broker.status()
            print(f"Kafka already running at {st.bootstrap} (pid {pid}, data {broker.data_dir})")
            return EXIT_OK
        broker.port = args.port or broker._recorded_ports().get("PLAINTEXT") or DEFAULT_PORT
        if args.foreground:
            print(f"Kafka {broker.version} starting in the foreground at {broker.bootstrap} "
                  f"(data {broker.data_dir}); Ctrl-C stops it", file=sys.stderr)
            broker.start(args.timeout, foreground=True)
            return EXIT_OK
        broker.start(args.timeout)
    except ToolMissing as exc:
        raise CliError(str(exc), EXIT_ENVIRONMENT) from None
    except BrokerError as exc:
        raise CliError(str(exc), EXIT_ENVIRONMENT) from None
    print(f"Kafka {broker.version} running at {broker.bootstrap} (pid {broker.read_pid()}, "
          f"ready in {broker.timings.get('ready_s', 0):.1f} s)")
    print(f"  data {broker.data_dir}, log {broker.log_path}")
    if broker.bootstrap != "127.0.0.1:9092":
        print(f"  export GENRE_KAFKA_BOOTSTRAP={broker.bootstrap}")
    print("  create the topics with: genre topics create")
    return EXIT_OK


def run_stop(args: argparse.Namespace) -> int:
    broker = _broker(args)
    pid = broker.read_pid()
    if pid is None:
        print(f"no Kafka broker running for {broker.data_dir}")
        return EXIT_OK
    broker.stop(grace=args.grace)
    print(f"Kafka broker stopped (pid {pid})")
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    st = _broker(args).status()
    if args.json:
        print(json.dumps(asdict(st)))
    elif not st.running:
        print(f"not running (data {st.data_dir})")
    elif st.ready:
        extra = f", SASL_SSL {st.sasl_ssl_bootstrap}" if st.sasl_ssl_bootstrap else ""
        print(f"running at {st.bootstrap} (pid {st.pid}{extra}, data {st.data_dir})")
    else:
        print(f"process {st.pid} runs but does not answer at {st.bootstrap}: {st.detail}")
    return EXIT_OK if st.running and st.ready else EXIT_ENVIRONMENT


def run_fetch(args: argparse.Namespace) -> int:
    import time

    from shared.broker import BrokerError, ensure_jars

    t0 = time.monotonic()
    try:
        libs = ensure_jars()
    except BrokerError as exc:
        raise CliError(str(exc), EXIT_ENVIRONMENT) from None
    print(f"{libs} ({sum(1 for _ in libs.glob('*.jar'))} jars, {time.monotonic() - t0:.1f} s)")
    return EXIT_OK
