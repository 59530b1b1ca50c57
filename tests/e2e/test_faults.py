"""Faults against the real broker and the three services as separate processes (no mocks).

- SIGKILL of every service, several times each, at random moments of one run of 52 songs;
- SIGTERM of each service while songs flow: exit status 0 within PROMPT_S, after
  committing (nothing it acknowledged is redone after the restart);
- the broker stopped and started again mid-run: the services reconnect by themselves
  (backoff), say so in their logs and count it in genre_kafka_reconnects_total.

For every run: every song has exactly one distinct verdict, no verdict names an unknown
song, and the verdicts equal those of an undisturbed run of the same files (compared
with `Verdict.identity()` minus the song id, which `genre produce` draws afresh). The
random schedule's seed is printed (set GENRE_FAULT_SEED to replay one).

Songs are 30-42 s (one or two chunks) so the suite stays within a few minutes on 2 cores.
"""

from __future__ import annotations

import os
import random
import re
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from shared import kafka_io
from shared.schemas import Chunk, Features, decode
from shared.service import READY_LOG
from shared.topics import ensure_topics
from tests.fixtures.audio import SYNTH_GENRES, make_song, write_audio
from tests.fixtures.broker import delete_test_topics, unique_settings
from tests.fixtures.services import SERVICES, Pipeline

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N_SONGS = 52
PROMPT_S = 10.0
"""A SIGTERMed service must have exited (status 0) within this many seconds."""
FAST_SESSION_MS = "6000"
"""Kafka's minimum session timeout: a SIGKILLed member leaves the group sooner."""
LOST = re.compile(r"lost the connection to Kafka|Kafka connection problem", re.I)


def wait_ready(svc, timeout: float = 120.0) -> None:  # noqa: ANN001
    """Until the service's current run logged that it consumes (imports and model load done)."""
    deadline = time.monotonic() + timeout
    while True:
        current = svc.log_path.read_text(errors="replace").rsplit(f"===== start {svc.starts} =====", 1)[-1]
        if READY_LOG.search(current):
            return
        if not svc.alive() or time.monotonic() > deadline:
            raise AssertionError(f"{svc.name} did not become ready:\n{svc.log_tail()}")
        time.sleep(0.2)


def fault_seed() -> int:
    seed = int(os.environ.get("GENRE_FAULT_SEED") or time.time_ns() % 1_000_000)
    print(f"\nfault schedule seed: GENRE_FAULT_SEED={seed}")
    return seed


def speed_up(pipeline: Pipeline) -> None:
    pipeline.env["GENRE_SESSION_TIMEOUT_MS"] = FAST_SESSION_MS
    for svc in pipeline.services.values():
        svc.env["GENRE_SESSION_TIMEOUT_MS"] = FAST_SESSION_MS


@pytest.fixture(scope="module")
def fault_songs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    """52 short songs of both synthetic genres: 30-35 s (one chunk), every fifth 42 s (two)."""
    root = tmp_path_factory.mktemp("fault songs")
    rng = random.Random(52)
    songs = []
    for i in range(N_SONGS):
        genre = SYNTH_GENRES[i % 2]
        seconds = 42 if i % 5 == 4 else rng.choice((30, 32, 35))
        songs.append((write_audio(root / f"song {i:02d}.flac", make_song(genre, seconds, seed=500 + i)), genre))
    return songs


@pytest.fixture(scope="module")
def undisturbed(fault_songs, kafka_bootstrap: str, synthetic_model,  # noqa: ANN001
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """{file name: verdict identity without the song id} from a run with no faults."""
    settings = unique_settings(kafka_bootstrap, "faults-reference")
    ensure_topics(settings)
    p = Pipeline(settings, str(synthetic_model), tmp_path_factory.mktemp("faults-reference"))
    try:
        p.start()
        ids = p.produce(*(path for path, _ in fault_songs))
        records = p.verdicts(len(ids), timeout=300)
    finally:
        p.stop()
        delete_test_topics(settings)
    ref = check_run(records, ids)
    genres = {str(path): genre for path, genre in fault_songs}
    wrong = {name: ident for name, ident in ref.items() if ident[0] != "ok" or ident[1] != genres[name]}
    assert not wrong, f"the undisturbed run itself got these wrong: {wrong}"
    return ref


def check_run(records: list[dict], ids: dict[str, str], reference: dict[str, tuple] | None = None) -> dict[str, tuple]:
    """Every song exactly one distinct verdict (equal to `reference` if given); returns them by file name."""
    identities: dict[str, set] = defaultdict(set)
    for r in records:
        identities[r["song_id"]].add(tuple(r["_identity"][1:]))
    unknown = set(identities) - set(ids.values())
    assert not unknown, f"verdicts for songs nobody sent: {unknown}"
    lost = {name for name, sid in ids.items() if sid not in identities}
    assert not lost, f"songs without a verdict: {sorted(lost)}"
    conflicting = {name: identities[sid] for name, sid in ids.items() if len(identities[sid]) > 1}
    assert not conflicting, f"songs with different verdicts: {conflicting}"
    got = {name: next(iter(identities[sid])) for name, sid in ids.items()}
    if reference is not None:
        differ = {name: (got[name], reference[name]) for name in got if got[name] != reference[name]}
        assert not differ, f"verdicts that differ from the undisturbed run (got, expected): {differ}"
    dupes = len(records) - len(ids)
    print(f"{len(ids)} songs, {len(records)} verdict records ({dupes} identical duplicates)")
    return got


def read_topic(settings, topic: str, timeout: float = 10.0) -> list:  # noqa: ANN001
    """Every record on `topic` right now."""
    reader = kafka_io.make_reader(settings, topic)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = reader.poll(timeout_ms=300)
            for records in batch.values():
                out.extend(records)
            if not batch and kafka_io.at_end(reader):
                break
    finally:
        reader.close()
    return out


def scrape(port: int, metric: str) -> dict[str, float]:
    """{label text: value} for one metric family from a service's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(metric + "{") or line.startswith(metric + " "):
            name, _, value = line.rpartition(" ")
            out[name[len(metric):]] = float(value)
    return out


def waves(items: list, n: int) -> list[list]:
    size = -(-len(items) // n)
    return [items[i:i + size] for i in range(0, len(items), size)]


# --------------------------------------------------------------------------------------------------


def test_sigkill_every_service_at_random_moments(pipeline, fault_songs, undisturbed) -> None:  # noqa: ANN001
    rng = random.Random(fault_seed())
    speed_up(pipeline)
    pipeline.start()
    kills = [name for name in SERVICES for _ in range(3)]
    rng.shuffle(kills)
    ids: dict[str, str] = {}
    done = []
    t0 = time.monotonic()
    for wave in waves([p for p, _ in fault_songs], 6):
        ids.update(pipeline.produce(*wave))
        for _ in range(2):
            if not kills:
                break
            name = kills.pop()
            wait_ready(pipeline.services[name])  # a kill while importing TensorFlow proves little
            time.sleep(rng.uniform(0.2, 2.5))
            pipeline.services[name].kill()
            done.append((round(time.monotonic() - t0, 1), name))
            time.sleep(rng.uniform(0.0, 1.5))
            pipeline.services[name].start()
    print(f"SIGKILLs (s after start, service): {done}")
    records = pipeline.verdicts(len(ids), timeout=420)
    check_run(records, ids, undisturbed)
    assert len(ids) >= 50
    assert {name: svc.starts for name, svc in pipeline.services.items()} == {name: 4 for name in SERVICES}


def test_sigterm_each_service_exits_promptly_after_committing(pipeline, fault_songs, undisturbed) -> None:  # noqa: ANN001
    rng = random.Random(fault_seed())
    speed_up(pipeline)
    pipeline.start()
    songs = [p for p, _ in fault_songs][:24]
    ids: dict[str, str] = {}
    exits = {}
    for name, wave in zip(SERVICES, waves(songs, 3)):
        ids.update(pipeline.produce(*wave))
        svc = pipeline.services[name]
        wait_ready(svc)
        time.sleep(rng.uniform(1.0, 3.0))  # with work in flight
        t = time.monotonic()
        rc = svc.terminate(timeout=60)
        exits[name] = (rc, round(time.monotonic() - t, 1))
        svc.start()
    print(f"SIGTERM exits (status, seconds): {exits}")
    for name, (rc, seconds) in exits.items():
        assert rc == 0, f"{name} exited with {rc} on SIGTERM:\n{pipeline.services[name].log_tail()}"
        assert seconds <= PROMPT_S, f"{name} took {seconds} s to stop"
    records = pipeline.verdicts(len(ids), timeout=300)
    check_run(records, ids, undisturbed)

    # Committed before exiting: nothing a stopped service had acknowledged was redone.
    s = pipeline.settings
    chunks = Counter()
    lasts = Counter()
    for rec in read_topic(s, s.topic_chunks):
        c = decode(rec.value, Chunk)
        chunks[(c.song_id, c.index)] += 1
        lasts[c.song_id] += c.last
    features = Counter((f.song_id, f.index) for f in (decode(r.value, Features) for r in read_topic(s, s.topic_features)))
    assert all(n == 1 for n in lasts.values()), f"the chunker redid finished songs: {[k for k, n in lasts.items() if n > 1]}"
    assert features == chunks, "the extractor redid chunks it had acknowledged before its SIGTERM"
    assert len(records) == len(ids), f"{len(records) - len(ids)} verdicts were published twice"


def test_broker_restart_mid_run_services_reconnect_by_themselves(pipeline, fault_songs, undisturbed,  # noqa: ANN001
                                                                broker_controller) -> None:
    speed_up(pipeline)
    ports = pipeline.expose_metrics()
    pipeline.start()
    for svc in pipeline.services.values():
        wait_ready(svc)
    songs = [p for p, _ in fault_songs][24:48]
    ids = pipeline.produce(*songs[:12])
    time.sleep(2.0)
    t = time.monotonic()
    broker_controller.stop()
    time.sleep(3.0)
    broker_controller.start()
    print(f"broker down for {time.monotonic() - t:.1f} s (stop, 3 s, start)")
    ids.update(pipeline.produce(*songs[12:]))
    records = pipeline.verdicts(len(ids), timeout=300)
    check_run(records, ids, undisturbed)
    for name, svc in pipeline.services.items():
        assert svc.alive() and svc.starts == 1, f"{name} was not meant to need a restart:\n{svc.log_tail()}"
        log = svc.log_path.read_text(errors="replace")
        assert LOST.search(log), f"{name} did not log the lost connection:\n{svc.log_tail()}"
        reconnects = scrape(ports[name], "genre_kafka_reconnects_total")
        assert sum(reconnects.values()) >= 1, f"{name}: genre_kafka_reconnects_total = {reconnects}"
    for name in SERVICES:
        log = pipeline.services[name].log_path.read_text(errors="replace")
        assert re.search(r"reconnected to Kafka at \S+ after [\d.]+ s", log), f"{name} did not log its reconnection"
