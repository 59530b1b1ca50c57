"""The classifier service's sustained throughput against offline predict, and its latency.

    python bench/classifier.py [--chunks 4000] [--warmup 16000] [--model models/default] [--threads 1]
                               [--batch 128] [--wait-ms 50] [--light 200] [--light-rate 20]
                               [--offline-batch 512] [--offline-seconds 60] [--features-schema 1]

In one run, on this machine, with the same TensorFlow thread limits everywhere, the same
model artifact and the same feature chunks: a bank of 8 chunks of generated audio whose
features are computed under the model's feature spec (`extract_chunk`, as the extractor
does: the Vamp arrays, plus the log-mel under spec v2), sent with every array of the chunk
and the model's spec id.

1. **Offline ceiling**: `ModelArtifact.predict` (preprocessing + network, as the service
   calls it) on one large batch (--offline-batch) of those chunks, best of up to 5 runs
   (fewer once --offline-seconds went into them): chunks/s. Also the time of one batch of
   --batch chunks (the "one batch time" of the latency goal).
2. **Service, sustained**: --warmup + --chunks feature messages (songs of 7 chunks, keyed
   by song id) are produced to a fresh topic of a real broker (GENRE_KAFKA_BOOTSTRAP if it
   answers, else a LocalBroker in a temporary folder) before the classifier starts; then
   `python -m services.classifier` drains them, and the bench waits without reading.
   Throughput is taken from the CreateTime stamps of the prediction records of the last
   --chunks (from the first one's time; the records written at that same time, the rest
   of its batch, are not counted). Goal: >= 0.8 x the ceiling. The records are features
   schema --features-schema (1: float32; 2: the log-mel in 16 bits, as compose and k8s run
   the extractor); the service's peak RSS is printed after the drain.
   The warm-up is there for the broker: a freshly started JVM spends much of its CPU in
   its JIT compiler for the first ~16,000 chunks (printed: "broker JIT compiler"), CPU
   that a broker in production, running for weeks, no longer spends. The warm-up's own
   rate is printed too.
3. **Light load**: with the service idle, --light chunks are produced one at a time at
   about --light-rate per second (Poisson arrivals). Added latency per chunk = the
   prediction record's CreateTime - the feature record's CreateTime. Goal: p99 <= max wait
   + one batch time.

The defaults are sized for a light network (well under 1 ms per chunk). A heavy one, such
as the `pretrained` architecture (a frozen musicnn reading the log-mel, ~0.3-0.6 s of CPU
per chunk), would take hours at those sizes; use e.g.

    python bench/classifier.py --chunks 300 --warmup 0 --offline-batch 128 --light 20 --light-rate 0.5

(about 6 minutes on 2 CPUs at ~0.36 s per chunk: the offline timing stops after
--offline-seconds, the drain takes ~2 minutes and the light load ~1). The broker's JIT
costs nothing next to such a network, so no warm-up is needed; --chunks should span a few
batches of --batch, since the window opens at the first batch's records (--chunks 200
measures little more than one batch).

The model is models/default if it loads, else the synthetic model of
tests/fixtures/models (trained once into the cache folder, a minute or so). That one is
the tiny architecture, cheaper to run than to fetch from Kafka; `--arch default` trains
the same synthetic data with the production architecture instead (real training, a few
epochs, cached), whose inference cost is representative (any architecture name works; one
that reads the log-mel gets spec v2 features).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import harness  # noqa: E402
from shared.broker import external_or_local  # noqa: E402



def find_model(arg: str | None, cache: Path, arch: str | None) -> tuple[str, str]:
    from shared.model import ModelArtifact, ModelLoadError

    candidates = [arg] if arg else ([] if arch else [str(ROOT / "models" / "default")])
    for c in candidates:
        try:
            art = ModelArtifact.load(c)
            return c, f"{art.version} ({art.metadata.get('arch')}) from {c}"
        except ModelLoadError as exc:
            if arg:
                raise SystemExit(f"--model {arg}: {exc}")
    arch = arch or "tiny"
    path = cache / f"bench-synthetic-{arch}"
    try:
        art = ModelArtifact.load(path)
        return str(path), f"{art.version} ({arch}, synthetic data; cached in {path})"
    except ModelLoadError:
        pass
    t0 = time.perf_counter()
    if arch == "tiny":
        from tests.fixtures.models import train_synthetic_model

        train_synthetic_model(path)
    else:
        from shared.features import extract_chunk, get_extractor
        from shared.model import arch_spec
        from shared.training import train_model
        from tests.fixtures.models import synthetic_chunks

        spec = arch_spec(arch)  # v2 (with the log-mel) for an architecture that reads it
        chunks, labels, groups = synthetic_chunks()
        feats = [extract_chunk(pcm, spec, get_extractor("builtin")) for pcm in chunks]
        train_model(feats, labels, groups, arch=arch, epochs=4, seed=0, validation_fraction=0.25, batch_size=8,
                    name=f"synthetic-{arch}", songs=groups, spec=spec).save(path)
    art = ModelArtifact.load(path)
    return str(path), f"{art.version} ({arch}, synthetic data; trained in {time.perf_counter() - t0:.0f} s)"


def chunk_bank(spec, n: int = 8):  # noqa: ANN001, ANN201
    """Features under `spec` (the model's: every array it reads, the log-mel too under v2) of
    n 30-s chunks of generated audio (both synthetic genres), as the extractor computes them."""
    from shared.features import extract_chunk, get_extractor
    from tests.fixtures.audio import make_song

    extract = get_extractor("builtin")
    size = spec.chunk_samples
    per = (n + 1) // 2
    out = []
    for g, genre in enumerate(("clicks", "drone")):
        pcm = make_song(genre, spec.chunk_seconds * per, seed=900 + g, sr=spec.sample_rate)
        out += [extract_chunk(pcm[k * size:(k + 1) * size], spec, extract) for k in range(per)]
    return out[:n]


def offline(art, bank, batch: int, big: int, repeats: int, budget_s: float) -> tuple[float, float]:  # noqa: ANN001
    """(chunks/s of predict on `big` chunks, seconds of predict on `batch` chunks), each the
    best of up to `repeats` runs (of big // batch times as many for the small batch), and of
    fewer once `budget_s` has been spent on it (at least one run each: a heavy model's batch
    takes a minute)."""
    big_batch = [bank[i % len(bank)] for i in range(big)]
    small = big_batch[:batch]
    art.predict(big_batch[:min(batch, big, 8)])  # traces the tf.function (one trace for every batch size)
    best_big = _best(art.predict, big_batch, repeats, budget_s)
    if len(small) == len(big_batch):
        best_small = best_big
    else:
        best_small = _best(art.predict, small, repeats * max(1, big // batch), budget_s)
    return big / best_big, best_small


def _best(fn, arg, repeats: int, budget_s: float) -> float:  # noqa: ANN001
    best, spent = float("inf"), 0.0
    for _ in range(max(1, repeats)):
        took = _timed(fn, arg)
        best, spent = min(best, took), spent + took
        if spent >= budget_s:
            break
    return best


def scrape(port: int) -> dict[str, float]:
    """Sum of each sample name on the service's /metrics (labels ignored)."""
    import urllib.request

    out: dict[str, float] = {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{")[0]
        if name == "genre_processing_seconds_sum" and 'stage="predict"' not in name_labels:
            continue
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            pass
    return out


def _timed(fn, arg) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


def features_message(song: str, index: int, last: bool, chunk, spec_id: str, schema: int = 1) -> bytes:  # noqa: ANN001
    from shared.schemas import Features, now

    return Features(song_id=song, filename=f"{song}.flac", index=index, last=last, spec_id=spec_id,
                    arrays=chunk.arrays(), produced_at=now()).encode(schema)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=4000, help="feature messages pre-produced for the drain")
    ap.add_argument("--model", default=None)
    ap.add_argument("--arch", default=None, help="without a model: train the synthetic data with this architecture "
                    "(default: tiny, as the tests do)")
    ap.add_argument("--threads", type=int, default=1, help="TensorFlow/BLAS threads, offline and in the service")
    ap.add_argument("--batch", type=int, default=None, help="GENRE_BATCH_MAX_SIZE (default: the service's default)")
    ap.add_argument("--wait-ms", type=float, default=50.0, help="GENRE_BATCH_MAX_WAIT_MS")
    ap.add_argument("--offline-batch", type=int, default=512, help="the large batch of the offline ceiling")
    ap.add_argument("--offline-seconds", type=float, default=60.0,
                    help="stop repeating an offline timing (best of 5) once this many seconds went into it")
    ap.add_argument("--light", type=int, default=200, help="chunks for the light-load latency")
    ap.add_argument("--light-rate", type=float, default=20.0, help="chunks per second under light load")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--features-schema", type=int, default=1, choices=(1, 2),
                    help="schema of the pre-produced features records (GENRE_FEATURES_SCHEMA of the extractor; "
                         "2: the log-mel in 16 bits)")
    ap.add_argument("--warmup", type=int, default=16000,
                    help="chunks drained before the measured ones (a fresh broker's JIT compiles for ~16000)")
    args = ap.parse_args()

    os.environ.update(harness.thread_env(args.threads))  # before TensorFlow is imported
    if args.batch is None:
        from shared.settings import Settings

        args.batch = Settings().batch_max_size
    import numpy as np

    from shared import kafka_io
    from shared.model import ModelArtifact
    from shared.schemas import Prediction, Verdict, decode
    from shared.settings import _default_cache_dir

    work = Path(tempfile.mkdtemp(prefix="genre-bench-classifier-"))
    model_path, model_note = find_model(args.model, _default_cache_dir(), args.arch)
    art = ModelArtifact.load(model_path)
    bank = chunk_bank(art.spec)  # the model's spec: offline and the service read the same arrays
    ceiling, batch_s = offline(art, bank, args.batch, args.offline_batch, repeats=5, budget_s=args.offline_seconds)
    print(f"model {model_note}")
    print(f"features {art.spec.id}: {', '.join(f'{k} {v.shape[0]}x{v.shape[1]}' for k, v in bank[0].arrays().items())}"
          f"; the network reads {', '.join(art.input_names)}")
    print(f"device {art.device}, threads {args.threads}, batch <= {args.batch}, wait <= {args.wait_ms:g} ms, "
          f"{os.cpu_count()} CPUs")
    print(f"offline ceiling  ModelArtifact.predict, batch {args.offline_batch}: {ceiling:8.1f} chunks/s "
          f"({1000 / ceiling:.3f} ms/chunk); one batch of {args.batch}: {1000 * batch_s:.1f} ms")

    bootstrap, broker = external_or_local(work)
    settings, env, metrics_port = harness.service_settings(
        bootstrap, "classifier", args.threads, partitions=args.partitions, batch_max_size=args.batch,
        batch_max_wait_ms=args.wait_ms, model_path=model_path)
    proc = None
    log = work / "classifier.log"
    try:
        # -- 2. sustained: pre-produce, then drain ----------------------------------------
        w, n = args.warmup, args.chunks
        total = w + n
        produce_s = harness.pre_produce(
            settings, settings.topic_features, total,
            lambda song, index, last, k: features_message(song, index, last, bank[k % len(bank)], art.spec.id,
                                                          args.features_schema))
        mb = total * len(features_message("x" * 13, 0, False, bank[0], art.spec.id, args.features_schema)) / 1e6
        print(f"pre-produced {w} + {n} feature messages ({mb:.0f} MB) in {produce_s:.1f} s")
        proc = harness.start_service("classifier", env, log)
        pids = harness.process_pids("classifier", proc, broker, "bench (this process, waiting)")
        sampler = harness.CpuSampler(pids, harness.broker_threads(broker)).start()
        harness.wait_until_written(settings, settings.topic_predictions, total, timeout=600 + total / 10)
        sampler.stop()
        preds = harness.read_all(settings, settings.topic_predictions, total, timeout=120)
        ts, k0, sustained = harness.sustained_window(preds, total, skip=w)
        if w:
            warm_ts, warm_k0, warm_rate = harness.sustained_window(preds, total, skip=0, end=w)
            warm_cpu = harness.cpu_parts(sampler, warm_ts[warm_k0], warm_ts[-1], w - 1 - warm_k0)
            print(f"warm-up, the first {w} chunks: {warm_rate:8.1f} chunks/s ({warm_rate / ceiling:.2f} of the ceiling); "
                  + (harness.NOT_MEASURED if warm_cpu is None else f"CPU per chunk in that window (ms): {warm_cpu[0]}"))
        songs = -(-total // harness.SONG_CHUNKS)
        verdicts = harness.read_all(settings, settings.topic_verdicts, songs, timeout=120)
        assert len({decode(r.value, Verdict).song_id for r in verdicts}) == songs
        ratio = sustained / ceiling
        m = scrape(metrics_port)
        print(f"service sustained, {len(ts) - 1 - k0} of the next {n} chunks: {sustained:8.1f} chunks/s "
              f"(over {ts[-1] - ts[k0]:.1f} s; {songs} verdicts in all)")
        if m.get("genre_classifier_batch_size_count"):
            print(f"  {int(m['genre_classifier_batch_size_count'])} predict calls, mean batch "
                  f"{m['genre_classifier_batch_size_sum'] / m['genre_classifier_batch_size_count']:.1f}; "
                  f"inference thread in predict {m.get('genre_processing_seconds_sum', 0):.1f} s of "
                  f"{ts[-1] - ts[0]:.1f} s; consumer paused by backpressure "
                  f"{int(m.get('genre_classifier_backpressure_pauses_total', 0))} times")
        print(f"ratio service / offline ceiling: {ratio:.2f}  (goal >= 0.80: {'PASS' if ratio >= 0.8 else 'FAIL'}); "
              f"vs predict at the service's batch of {args.batch} ({args.batch / batch_s:.1f} chunks/s): "
              f"{sustained * batch_s / args.batch:.2f}")
        # Where the machine's CPU went in the sustained window: what caps the service here.
        print(harness.cpu_line(sampler, ts[k0], ts[-1], len(ts) - 1 - k0, ceiling, "offline predict alone"))
        rss = harness.peak_rss_mb(proc.pid)
        print(f"classifier service peak RSS: {rss:.0f} MB" if rss else "classifier service peak RSS: not measured")
        producer = kafka_io.make_producer(settings)  # for the light-load phase

        # -- 3. light load ----------------------------------------------------------------
        rng = np.random.default_rng(1)
        sent: dict[tuple[str, int], float] = {}
        m = args.light
        for k in range(m):
            song, index = f"light-{k // 3:05d}", k % 3
            fut = producer.send(settings.topic_features, key=song.encode(),
                                value=features_message(song, index, index == 2 or k == m - 1, bank[k % len(bank)],
                                                       art.spec.id, args.features_schema))
            producer.flush()
            sent[(song, index)] = fut.get(timeout=30).timestamp / 1000.0
            time.sleep(rng.exponential(1.0 / args.light_rate))
        light = harness.read_all(settings, settings.topic_predictions, total + m, timeout=120)
        lat = []
        for r in light:
            p = decode(r.value, Prediction)
            if (p.song_id, p.index) in sent:
                lat.append(r.timestamp / 1000.0 - sent[(p.song_id, p.index)])
        if lat:  # none with --light 0
            lat_ms = 1000 * np.array(lat)
            p50, p99 = np.percentile(lat_ms, 50), np.percentile(lat_ms, 99)
            budget = args.wait_ms + 1000 * batch_s
            print(f"light load {len(lat)} chunks at ~{args.light_rate:g}/s: added latency p50 {p50:.1f} ms, "
                  f"p99 {p99:.1f} ms, max {lat_ms.max():.1f} ms")
            print(f"p99 vs max wait {args.wait_ms:g} ms + one batch of {args.batch} {1000 * batch_s:.1f} ms = "
                  f"{budget:.1f} ms: {'PASS' if p99 <= budget else 'FAIL'}")
        producer.close()
    finally:
        harness.tear_down(proc, settings, broker)
    print(f"service log: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
