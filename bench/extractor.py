"""The extractor service's sustained throughput from Kafka against its compute alone.

    python bench/extractor.py [--chunks 400] [--warmup 0] [--runs 20] [--partitions 12] [--chunk-version 1 2]
        [--features-schema 1 [2]] [--chunk-bits 24] [--rounds 1] [--idle-seconds 10] [--tls]

In one run, on this machine, one BLAS/FFT thread everywhere:

1. **Compute alone**: `extract_chunk` under the feature spec the service emits
   (GENRE_FEATURE_SPEC, default 2: the Vamp features and the log-mel) on the same 30-s
   chunks the service gets (median of --runs calls after a warm-up): chunks/s of one
   process, what k8s/README.md's R_e assumes.
2. **Service, sustained**, once per --chunk-version: --chunks chunk messages (30 s of PCM
   each; schema 1: float32, 2.65 MB; 2: 24-bit block floating point in FLAC, rounded to
   --chunk-bits as the chunker's GENRE_CHUNK_BITS does; songs of 7 chunks, keyed by song id;
   the service decodes them; the service writes features schema --features-schema: one
   value for every drain, or one per --chunk-version) are produced to a fresh topic of a real broker
   (GENRE_KAFKA_BOOTSTRAP if it answers, else a new LocalBroker in a temporary folder;
   with --tls a new LocalBroker whose clients all speak SASL_SSL)
   before `python -m services.extractor` starts and drains them: the --warmup records
   queued, the measured --chunks one record per request (each acknowledged before the
   next, as a chunker sends the chunks of a song it decodes), and the CPU per chunk each
   process spent taking those in is measured: the chunk topic's ingest. Throughput comes from the
   CreateTime stamps of its features records, over the last 95 % (the first 5 % are the
   group join and first fetches), or with --warmup N over the --chunks after the first N
   (a fresh broker's JVM compiles its hot paths meanwhile: JIT compiler CPU a long-running
   broker no longer spends). Also: the CPU each process spent per chunk in that
   window (the broker's split into its JIT compiler, its garbage collector and its data
   plane: the threads that serve produce and fetch requests), the rate the machine's CPUs
   allow at those costs, the features records' size and the service's peak RSS. The
   broker's CPU is also sampled for --idle-seconds with no client connected (before the
   ingest), and its CPU per chunk without its JIT compiler is given net of that rate too:
   the raft, controller and scheduler work a broker does every second whatever the
   traffic, which a window charges to its chunks in proportion to its length, so to a
   slower drain more of it. (The rate with the extractor connected and idle is printed
   too; it is higher, the idle consumer's empty fetches, and not subtracted: a busy
   consumer's fetches return records.)
3. With two drains: the later one against the first (bytes, throughput, broker CPU per
   chunk to take the chunk in, in the drain window, and both together: what the broker
   spends on one chunk's way through the extractor stage).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import harness  # noqa: E402
from shared.broker import external_or_local  # noqa: E402



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=400, help="chunk messages pre-produced for the drain")
    ap.add_argument("--runs", type=int, default=20, help="timed calls of the compute-only figure")
    ap.add_argument("--warmup", type=int, default=0,
                    help="chunks drained before the measured --chunks, so that a fresh broker's JIT compiler has "
                         "compiled its hot paths, as in a broker that has run for days (default 0)")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--chunk-version", type=int, nargs="+", default=[1, 2], choices=(1, 2),
                    help="chunk schemas of the pre-produced records, one drain each on a fresh broker, "
                         "compared with the first (default: 1 2; 2 is the compact encoding)")
    ap.add_argument("--features-schema", type=int, nargs="+", default=[1], choices=(1, 2),
                    help="features schema the service writes (GENRE_FEATURES_SCHEMA): one for every drain, or one per "
                         "--chunk-version (default 1; 2 writes the log-mel in 16 bits)")
    ap.add_argument("--tls", action="store_true",
                    help="every client speaks SASL_SSL (SCRAM-SHA-512 over TLS, as a production cluster should) "
                         "to a new local broker with that listener: the broker then encrypts every byte it serves")
    ap.add_argument("--rounds", type=int, default=1,
                    help="above 1: every drain this many times over, alternating, all on one broker started once, so "
                         "that its JIT compiler's warm-up falls on each alike; figures are the means of the rounds "
                         "(default 1: one drain each, each on a fresh broker)")
    ap.add_argument("--idle-seconds", type=float, default=10.0,
                    help="the broker's CPU is also sampled this long with no client connected, before the chunks are "
                         "taken in, to give its CPU per chunk net of the work it does every second whatever the traffic "
                         "(and, for information, as long after the drain with the extractor idle; 0: not measured; "
                         "default 10)")
    ap.add_argument("--chunk-bits", type=int, default=24,
                    help="v2 records rounded to these bits per block first, as GENRE_CHUNK_BITS (default 24)")
    args = ap.parse_args()
    if len(args.features_schema) not in (1, len(args.chunk_version)):
        ap.error("--features-schema takes one value, or one per --chunk-version")
    drains = list(zip(args.chunk_version, args.features_schema * len(args.chunk_version)
                      if len(args.features_schema) == 1 else args.features_schema))

    os.environ.update(harness.thread_env(1))
    from threadpoolctl import threadpool_limits

    from shared.features import extract_chunk, fft_backend, get_extractor
    from shared.featurespec import spec_by_version
    from shared.settings import Settings
    from tests.fixtures.audio import make_song

    spec = spec_by_version(Settings.from_env().feature_spec)
    size = spec.chunk_samples
    extract = get_extractor("builtin")
    bank = [make_song(genre, 30.0, seed=700 + k)[:size] for k, genre in enumerate(("clicks", "drone", "clicks", "drone"))]
    with threadpool_limits(limits=1):
        for pcm in bank:
            extract_chunk(pcm, spec, extract)
        times = []
        for r in range(args.runs):
            t0 = time.perf_counter()
            extract_chunk(bank[r % len(bank)], spec, extract)
            times.append(time.perf_counter() - t0)
    compute = 1.0 / statistics.median(times)
    print(f"compute alone    extract_chunk, spec {spec.id} ({fft_backend()} FFT), 1 thread: {compute:7.1f} chunks/s "
          f"({1000 / compute:.2f} ms/chunk), median of {args.runs}")

    if args.rounds == 1:
        results = [drain(args, version, features_schema, bank, compute, size) for version, features_schema in drains]
    else:
        work = Path(tempfile.mkdtemp(prefix="genre-bench-extractor-broker-"))
        shared_broker = start_broker(args, work)
        print(f"\none broker for {args.rounds} rounds of the drains, alternating")
        try:
            runs = [drain(args, version, features_schema, bank, compute, size, shared_broker)
                    for _ in range(args.rounds) for version, features_schema in drains]
        finally:
            broker: Any = shared_broker[1]
            if broker is not None:
                harness.stop_broker(broker)
                print(f"broker log: {broker.log_path}")
        results = [mean_of_rounds([r for r in runs if r["label"] == label])
                   for label in dict.fromkeys(r["label"] for r in runs)]
    base = results[0]
    for got in results[1:]:
        print(f"\n{got['label']} against {base['label']}: bytes per chunk record {got['bytes'] / base['bytes']:.2f}x, "
              f"per features record {got['features_bytes'] / base['features_bytes']:.2f}x, "
              f"service throughput {got['rate'] / base['rate']:.2f}x, service / compute alone "
              f"{base['rate'] / compute:.2f} -> {got['rate'] / compute:.2f}"
              + (f", service peak RSS {base['rss']:.0f} -> {got['rss']:.0f} MB" if base["rss"] and got["rss"] else ""))
        if not (base["drain"] and got["drain"]):
            print("broker CPU not measured (external broker)")
            continue
        for stage, what in STAGES.items():
            print(f"  broker CPU per chunk, {what}:")
            for part in BROKER_PARTS:
                a, b = base[stage].get(part), got[stage].get(part)
                if a and b:
                    print(f"    {part} {a:.2f} -> {b:.2f} ms ({b / a - 1:+.0%})")
    return 0


def tls_broker(work: Path) -> tuple[str, object, dict[str, object]]:
    """A new LocalBroker with a SASL_SSL listener (a throw-away CA, one SCRAM user), its
    SASL_SSL bootstrap and the client settings that reach it."""
    import secrets

    from shared.broker import LocalBroker, SaslSslListener, ScramUser
    from tests.fixtures.broker import make_test_pki

    pki = make_test_pki(work / "pki")
    password = secrets.token_hex(12)
    listener = SaslSslListener(keystore_location=str(pki.keystore_pem), keystore_type="PEM",
                               mechanisms=("SCRAM-SHA-512",), scram_users=(ScramUser("genre-bench", password),))
    broker = LocalBroker(work / "kafka", port=0, sasl_ssl=listener)
    broker.start(timeout=180)
    return broker.sasl_ssl_bootstrap or "", broker, {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "genre-bench",
        "sasl_password": password, "ssl_cafile": str(pki.ca_file), "ssl_check_hostname": True}


def start_broker(args: argparse.Namespace, work: Path) -> tuple[str, object, dict[str, object]]:
    """(bootstrap, LocalBroker or None for an external one, client security settings)."""
    return tls_broker(work) if args.tls else (*external_or_local(work), {})


def mean_of_rounds(runs: list[dict]) -> dict:
    """One drain's figures averaged over its rounds (each round's broker CPU printed)."""
    print(f"\n{runs[0]['label']}, {len(runs)} rounds: throughput "
          + ", ".join(f"{r['rate']:.1f}" for r in runs) + " chunks/s; broker CPU per chunk, ingest + drain = whole: "
          + "; ".join(f"{r['ingest'].get('broker', 0):.2f} + {r['drain'].get('broker', 0):.2f} = "
                      f"{r['whole'].get('broker', 0):.2f} ms (JIT compiler {r['whole'].get('broker JIT compiler', 0):.2f})"
                      for r in runs))
    mean = {k: statistics.mean(r[k] for r in runs) for k in ("rate", "bytes", "features_bytes")}
    rss = [r["rss"] for r in runs if r["rss"]]
    stages = {stage: {part: statistics.mean(r[stage][part] for r in runs)
                      for part in set.intersection(*(set(r[stage]) for r in runs))} for stage in STAGES}
    return {"label": runs[0]["label"], **mean, "rss": max(rss) if rss else None, **stages}


def drain(args: argparse.Namespace, version: int, features_schema: int, bank: list, compute: float,
          size: int, shared_broker: tuple[str, object, dict[str, object]] | None = None) -> dict:
    """Pre-produce --chunks records of chunk schema `version` to a fresh broker (or to
    `shared_broker`, left running), let the service drain them writing `features_schema`;
    its sustained rate, the record sizes and the broker's CPU per chunk (in all and by part)."""
    import msgpack

    from shared import pcm_codec
    from shared.schemas import Chunk, Features, decode, now
    from tests.fixtures.audio import SR

    # Each bank chunk is encoded once (FLAC costs the chunker ~20 ms a chunk); the records
    # differ only in their song fields. v2 chunks are rounded to --chunk-bits first, as the
    # chunker does with GENRE_CHUNK_BITS.
    bits = args.chunk_bits if version >= 2 else pcm_codec.BITS
    pcms = [pcm if bits >= pcm_codec.BITS else pcm_codec.round_bits(pcm, bits) for pcm in bank]
    wire = [Chunk(song_id="x", filename="x.flac", index=0, last=False, sample_rate=SR, n_samples=size,
                  pcm=pcm).to_dict(version) for pcm in pcms]
    t0 = time.process_time()
    for w in wire:
        if decode(msgpack.packb(w, use_bin_type=True), Chunk).pcm.shape != (size,):
            raise SystemExit("a bench chunk does not decode to a whole chunk")
    decode_ms = 1000 * (time.process_time() - t0) / len(bank)
    chunk_bytes = [len(msgpack.packb(w, use_bin_type=True)) for w in wire]
    label = f"chunk schema v{version}" + (f" at {bits} bits" if version >= 2 else "") + f", features schema {features_schema}"
    print(f"\n{label}: {statistics.mean(chunk_bytes) / 1e6:.2f} MB per record "
          f"(bank of {len(bank)}: {', '.join(f'{b / 1e6:.2f}' for b in chunk_bytes)}), "
          f"decode {decode_ms:.1f} ms CPU per record in this process")

    def record(song: str, index: int, last: bool, k: int) -> bytes:
        w = wire[k % len(wire)]
        return msgpack.packb({**w, "song_id": song, "filename": f"{song}.flac", "index": index, "last": last,
                              "produced_at": now()}, use_bin_type=True)

    work = Path(tempfile.mkdtemp(prefix="genre-bench-extractor-"))
    bootstrap, broker, security = shared_broker or start_broker(args, work)
    settings, env, _ = harness.service_settings(bootstrap, "extractor", 1, partitions=args.partitions,
                                                extractor_backend="builtin", features_schema=features_schema, **security)
    proc = None
    log = work / "extractor.log"
    try:
        n = args.warmup + args.chunks
        produce_s = harness.pre_produce(settings, settings.topic_chunks, args.warmup, record)
        ingest_sampler = harness.CpuSampler(harness.process_pids("extractor", None, broker, "bench (this process, producing)"),
                                            harness.broker_threads(broker)).start()
        idle_before = idle_window(args.idle_seconds)
        t0 = time.time()
        ingest_s = harness.pre_produce(settings, settings.topic_chunks, n, record, start=args.warmup, one_at_a_time=True)
        t1 = time.time()
        ingest_sampler.stop()
        total = sum(chunk_bytes[k % len(bank)] for k in range(n))
        print(f"pre-produced {n} chunk messages ({total / 1e6:.0f} MB): {args.warmup} queued in {produce_s:.1f} s, then "
              f"{args.chunks} one record per request, as a chunker sends them, in {ingest_s:.1f} s")
        idle = idle_rate(ingest_sampler, *idle_before, "no client connected")
        ingest = broker_cpu(ingest_sampler, t0, t1, args.chunks, idle)
        got = harness.cpu_parts(ingest_sampler, t0, t1, args.chunks)
        print(f"CPU per chunk taken in (ms): {got[0]}" if got else harness.NOT_MEASURED)
        proc = harness.start_service("extractor", env, log)
        sampler = harness.CpuSampler(harness.process_pids("extractor", proc, broker, "bench (this process, waiting)"),
                                     harness.broker_threads(broker)).start()
        harness.wait_until_written(settings, settings.topic_features, n, timeout=600 + n)
        time.sleep(min(1.0, args.idle_seconds))  # the extractor's last commit
        idle_after = idle_window(args.idle_seconds)
        sampler.stop()
        feats = harness.read_all(settings, settings.topic_features, n, timeout=120)
        bad = [f.error for f in (decode(r.value, Features) for r in feats[:n]) if f.error]
        if bad:
            raise SystemExit(f"{len(bad)} features records carry errors, e.g. {bad[0]}")
        ts, k0, sustained = harness.sustained_window(feats, n, skip=args.warmup)
        print(f"service sustained {n - 1 - k0} chunks from Kafka"
              + (f" after a warm-up of {args.warmup}" if args.warmup else "")
              + f": {sustained:7.1f} chunks/s (window {ts[-1] - ts[k0]:.1f} s)")
        print(f"ratio service / compute alone: {sustained / compute:.2f}")
        features_bytes = statistics.mean(len(r.value) for r in feats[:n])
        print(f"features records: {features_bytes / 1e6:.3f} MB each (mean)")
        print(harness.cpu_line(sampler, ts[k0], ts[-1], n - 1 - k0, compute, "extract_chunk alone"))
        # for information: an idle consumer's empty fetches (FETCH_MAX_WAIT_MS) cost more, but
        # a busy one's fetches return records, so that rate is not subtracted
        idle_rate(sampler, *idle_after, "the extractor connected, nothing to fetch")
        cpu = broker_cpu(sampler, ts[k0], ts[-1], n - 1 - k0, idle)
        rss = harness.peak_rss_mb(proc.pid)
        print(f"extractor service peak RSS: {rss:.0f} MB" if rss else "extractor service peak RSS: not measured")
    finally:
        harness.tear_down(proc, settings, None if shared_broker else broker)
    print(f"service log: {log}")
    return {"label": label, "rate": sustained, "bytes": statistics.mean(chunk_bytes), "features_bytes": features_bytes,
            "rss": rss, "drain": cpu, "ingest": ingest,
            "whole": {part: cpu[part] + ingest[part] for part in cpu.keys() & ingest.keys()}}


NET = "broker without its JIT compiler, net of its idle work"
BROKER_PARTS = ("broker", "broker without its JIT compiler", NET, *harness.BROKER_THREADS)
STAGES = {
    "drain": "serving the chunk to the extractor and taking its features in (the drain window)",
    "ingest": "taking the chunk in (one record per request)",
    "whole": "both: the chunk's way through the extractor stage",
}


def broker_cpu(sampler: harness.CpuSampler, t0: float, t1: float, chunks: int,
               idle: float | None = None) -> dict[str, float]:
    """ms of broker CPU per chunk in [t0, t1], in all and by part (BROKER_PARTS); empty
    for an external broker. With `idle` (its CPU seconds per second, its JIT compiler's
    left out, with nothing to do) also net of that: what the chunks themselves cost it. A
    broker in production does that work whatever the traffic, while here it is spread over
    as many chunks as the drain happens to pass in the window, so a slower drain would be
    charged more of it. (The JIT compiler is left out of both: it keeps compiling for a
    while after a burst, so it is not idle work.)"""
    per_chunk = 1000 / max(1, chunks)
    cpu = {part: per_chunk * used for part in ("broker", *harness.BROKER_THREADS)
           if (used := sampler.used(part, t0, t1)) is not None}
    if "broker" in cpu:
        cpu["broker without its JIT compiler"] = cpu["broker"] - cpu.get("broker JIT compiler", 0.0)
        if idle is not None:
            cpu[NET] = cpu["broker without its JIT compiler"] - per_chunk * idle * (t1 - t0)
    return cpu


def idle_window(seconds: float) -> tuple[float, float]:
    """Wall times around `seconds` of doing nothing (a sampler runs meanwhile)."""
    t0 = time.time()
    time.sleep(max(0.0, seconds))
    return t0, time.time()


def idle_rate(sampler: harness.CpuSampler, t0: float, t1: float, what: str) -> float | None:
    """The broker's CPU seconds per second in an idle window [t0, t1], its JIT compiler's
    left out (printed beside); None when not measured."""
    used = sampler.used("broker", t0, t1) if t1 - t0 >= 1.0 else None
    if used is None:
        return None
    jit = sampler.used("broker JIT compiler", t0, t1) or 0.0
    print(f"broker idle ({what}): {1000 * (used - jit) / (t1 - t0):.1f} ms of CPU per second without its JIT "
          f"compiler ({1000 * jit / (t1 - t0):.1f} ms/s) over {t1 - t0:.0f} s")
    return (used - jit) / (t1 - t0)


if __name__ == "__main__":
    sys.exit(main())
