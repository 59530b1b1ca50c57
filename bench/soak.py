"""Soak: N songs through the real pipeline while services are SIGKILLed at random.

    python bench/soak.py [--songs 120] [--budget 600] [--kill-every 5] [--seed S] [--model DIR]

Loopback only: the broker is a LocalBroker on 127.0.0.1 started in a temporary
directory (or GENRE_KAFKA_BOOTSTRAP if it is a loopback address that answers), the
services run as local processes (tests/fixtures/services.Pipeline, the same runner the
test suite uses). Bounded: at most --songs (<= 1000) songs and --budget (<= 3600) seconds;
whatever has no verdict when the budget runs out counts as lost.

Songs are generated (30-42 s, the two synthetic genres) and sent in waves; while they
flow, a random ready service (chunker, extractor or classifier) is SIGKILLed every
--kill-every seconds on average (only while some sent song has no verdict yet, so kills
land on work in flight) and restarted 0-2 s later. A group-less reader follows
the verdict topic the whole time, as any consumer of results would.

Prints progress on stderr and, at the end, one JSON line on stdout:
songs_sent, verdicts (songs with one), lost, conflicting (songs with two different
verdicts), duplicates (records beyond the first per key that consumers saw: verdicts,
and per (song, chunk) on the chunk and feature topics), kills per service,
end-to-end latency p50/p99 (upload to the song's first verdict, seconds) and the wall
time. Exit status 0 when nothing was lost or conflicting, else 1.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MAX_SONGS = 1000
MAX_BUDGET_S = 3600.0


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def is_loopback(bootstrap: str) -> bool:
    for server in bootstrap.split(","):
        host = server.strip().rpartition(":")[0].strip("[]")
        if host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    return True


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 3)


def ready(svc) -> bool:  # noqa: ANN001
    from shared.service import READY_LOG

    if not svc.alive():
        return False
    text = svc.log_path.read_text(errors="replace").rsplit(f"===== start {svc.starts} =====", 1)[-1]
    return bool(READY_LOG.search(text))


def count_duplicates(settings, topic: str, kind) -> int:  # noqa: ANN001
    """Records beyond the first per (song, chunk index) on a topic, read from the start."""
    from shared import kafka_io
    from shared.schemas import SchemaError, decode

    reader = kafka_io.make_reader(settings, topic)
    seen: Counter = Counter()
    try:
        idle = 0
        while idle < 3:
            batch = reader.poll(timeout_ms=500)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                for rec in records:
                    try:
                        m = decode(rec.value, kind)
                    except SchemaError:
                        continue
                    seen[(m.song_id, m.index)] += 1
    finally:
        reader.close()
    return sum(n - 1 for n in seen.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=120, help=f"songs to send (default 120, at most {MAX_SONGS})")
    ap.add_argument("--budget", type=float, default=600.0, help=f"wall-clock limit in s (default 600, at most {MAX_BUDGET_S:g})")
    ap.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between SIGKILLs (0: no kills)")
    ap.add_argument("--wave", type=int, default=6, help="songs per `genre produce` wave (default 6)")
    ap.add_argument("--wave-every", type=float, default=4.0, help="seconds between waves (default 4)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock; printed)")
    ap.add_argument("--model", default=None, help="model artifact (default models/default, else a synthetic one)")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, songs)")
    args = ap.parse_args()
    if not 1 <= args.songs <= MAX_SONGS:
        ap.error(f"--songs must be 1..{MAX_SONGS}")
    if not 10 <= args.budget <= MAX_BUDGET_S:
        ap.error(f"--budget must be 10..{MAX_BUDGET_S:g} s")
    seed = args.seed if args.seed is not None else time.time_ns() % 1_000_000
    rng = random.Random(seed)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from shared import kafka_io
    from shared.broker import LocalBroker
    from shared.schemas import Chunk, Features, Verdict, decode
    from shared.settings import Settings
    from shared.topics import ensure_topics
    from tests.fixtures.audio import SYNTH_GENRES, make_song, write_audio
    from tests.fixtures.broker import delete_test_topics, unique_settings
    from tests.fixtures.services import SERVICES, Pipeline

    started = time.monotonic()
    deadline = started + args.budget
    work = Path(tempfile.mkdtemp(prefix="genre-soak-"))
    log(f"{args.songs} songs, budget {args.budget:g} s, a kill every ~{args.kill_every:g} s, seed {seed}, work {work}")

    broker = None
    bootstrap = os.environ.get("GENRE_KAFKA_BOOTSTRAP", "")
    if bootstrap:
        if not is_loopback(bootstrap):
            log(f"GENRE_KAFKA_BOOTSTRAP={bootstrap} is not a loopback address; the soak runs on loopback only")
            return 2
        try:
            kafka_io.wait_for_broker(Settings.from_env(bootstrap_servers=bootstrap), timeout=5)
        except kafka_io.KafkaIOError:
            bootstrap = ""
    if not bootstrap:
        broker = LocalBroker(work / "kafka", port=0)
        broker.start(timeout=120)
        bootstrap = broker.bootstrap
    log(f"broker {bootstrap}")

    model = args.model
    if model is None:
        shipped = ROOT / "models" / "default"
        if (shipped / "metadata.json").exists():
            model = str(shipped)
        else:
            from tests.fixtures.models import train_synthetic_model

            log("training the synthetic model (models/default is absent)")
            model = str(train_synthetic_model(work / "model"))

    songs = []
    for i in range(args.songs):
        genre = SYNTH_GENRES[i % 2]
        seconds = 42 if i % 5 == 4 else rng.choice((30, 32, 35))
        songs.append(write_audio(work / "songs" / f"soak {i:04d}.flac", make_song(genre, seconds, seed=9000 + i)))
    log(f"{len(songs)} songs generated")

    settings = unique_settings(bootstrap, "soak", partitions=args.partitions)
    ensure_topics(settings)
    pipeline = Pipeline(settings, model, work)
    for svc in pipeline.services.values():
        svc.env["GENRE_SESSION_TIMEOUT_MS"] = "6000"
    ids: dict[str, str] = {}
    identities: dict[str, set] = defaultdict(set)
    records_per_song: Counter = Counter()
    latency: dict[str, float] = {}
    kills: Counter = Counter()
    restarts: list[tuple[float, str]] = []
    reader = None
    result: dict = {}
    try:
        pipeline.start()
        while not all(ready(s) for s in pipeline.services.values()):
            if time.monotonic() > deadline:
                raise SystemExit("services did not start within the budget")
            time.sleep(0.5)
        reader = kafka_io.make_reader(settings, settings.topic_verdicts)
        pending = list(songs)
        next_wave = time.monotonic()
        next_kill = time.monotonic() + (rng.expovariate(1 / args.kill_every) if args.kill_every > 0 else 1e12)
        while time.monotonic() < deadline:
            now = time.monotonic()
            if pending and now >= next_wave:
                wave, pending = pending[: args.wave], pending[args.wave:]
                ids.update(pipeline.produce(*wave))
                next_wave = time.monotonic() + args.wave_every
            if now >= next_kill and len(identities.keys() & ids.values()) < len(ids):  # only with work in flight
                candidates = [n for n in SERVICES if ready(pipeline.services[n])]
                if candidates:
                    name = rng.choice(candidates)
                    pipeline.services[name].kill()
                    kills[name] += 1
                    restarts.append((time.monotonic() + rng.uniform(0, 2), name))
                    log(f"SIGKILL {name} ({sum(kills.values())} kills; {len(latency)}/{len(ids)} songs done)")
                next_kill = time.monotonic() + rng.expovariate(1 / args.kill_every)
            for when, name in list(restarts):
                if time.monotonic() >= when:
                    pipeline.services[name].start()
                    restarts.remove((when, name))
            for recs in reader.poll(timeout_ms=200).values():
                for rec in recs:
                    v = decode(rec.value, Verdict)
                    identities[v.song_id].add(v.identity())
                    records_per_song[v.song_id] += 1
                    if v.song_id not in latency and v.produced_at:
                        latency[v.song_id] = v.verdict_at - v.produced_at
            if not pending and not restarts and ids and set(ids.values()) <= set(identities) \
                    and kafka_io.at_end(reader):
                break
        sent = set(ids.values())
        lost = sorted(sent - set(identities))
        conflicting = sorted(s for s in sent if len(identities.get(s, ())) > 1)
        lat = [latency[s] for s in sent if s in latency]
        result = {
            "songs_sent": len(sent),
            "verdicts": len(sent & set(identities)),
            "lost": len(lost),
            "conflicting": len(conflicting),
            "duplicates": {
                "verdicts": sum(records_per_song[s] - 1 for s in sent if records_per_song[s]),
                "features": count_duplicates(settings, settings.topic_features, Features),
                "chunks": count_duplicates(settings, settings.topic_chunks, Chunk),
            },
            "error_verdicts": sum(1 for s in sent for i in identities.get(s, ()) if i[1] != "ok"),
            "kills": dict(kills),
            "latency_p50_s": percentile(lat, 0.50),
            "latency_p99_s": percentile(lat, 0.99),
            "wall_s": round(time.monotonic() - started, 1),
            "seed": seed,
        }
        if lost:
            log(f"lost songs: {lost[:10]}")
    finally:
        if reader is not None:
            reader.close()
        pipeline.stop()
        delete_test_topics(settings)
        if broker is not None:
            broker.stop(grace=20)
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")
    print(json.dumps(result), flush=True)
    return 0 if result and result["lost"] == 0 and result["conflicting"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
