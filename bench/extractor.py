"""The extractor service's sustained throughput from Kafka against its compute alone.

    python bench/extractor.py [--chunks 400] [--runs 20] [--partitions 12] [--chunk-version 1 2] [--chunk-bits 24] [--tls]

In one run, on this machine, one BLAS/FFT thread everywhere:

1. **Compute alone**: `extract_chunk` under the feature spec the service emits
   (GENRE_FEATURE_SPEC, default 2: the Vamp features and the log-mel) on the same 30-s
   chunks the service gets (median of --runs calls after a warm-up): chunks/s of one
   process, what k8s/README.md's R_e assumes.
2. **Service, sustained**, once per --chunk-version: --chunks chunk messages (30 s of PCM
   each; schema 1: float32, 2.65 MB; 2: 24-bit block floating point in FLAC, rounded to
   --chunk-bits as the chunker's GENRE_CHUNK_BITS does; songs of 7 chunks, keyed by song id;
   the service decodes them) are produced to a fresh topic of a real broker
   (GENRE_KAFKA_BOOTSTRAP if it answers, else a new LocalBroker in a temporary folder;
   with --tls a new LocalBroker whose clients all speak SASL_SSL)
   before `python -m services.extractor` starts and drains them. Throughput comes from the
   CreateTime stamps of its features records, over the last 95 % (the first 5 % are the
   group join and first fetches). Also: the CPU each process spent per chunk in that
   window, and the rate the machine's CPUs allow at those costs.
3. With two versions: the later one against the first (bytes, throughput, broker CPU per
   chunk).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import harness  # noqa: E402
from shared.broker import external_or_local  # noqa: E402



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=400, help="chunk messages pre-produced for the drain")
    ap.add_argument("--runs", type=int, default=20, help="timed calls of the compute-only figure")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--chunk-version", type=int, nargs="+", default=[1, 2], choices=(1, 2),
                    help="chunk schemas of the pre-produced records, one drain each on a fresh broker, "
                         "compared with the first (default: 1 2; 2 is the compact encoding)")
    ap.add_argument("--tls", action="store_true",
                    help="every client speaks SASL_SSL (SCRAM-SHA-512 over TLS, as a production cluster should) "
                         "to a new local broker with that listener: the broker then encrypts every byte it serves")
    ap.add_argument("--chunk-bits", type=int, default=24,
                    help="v2 records rounded to these bits per block first, as GENRE_CHUNK_BITS (default 24)")
    args = ap.parse_args()

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

    results = {}
    for version in args.chunk_version:
        results[version] = drain(args, version, bank, compute, size)
    if len(results) > 1:
        base = results[min(results)]
        print()
        for version, got in sorted(results.items()):
            if got is base:
                continue
            print(f"v{version} against v{min(results)}: bytes per record {got['bytes'] / base['bytes']:.2f}x, "
                  f"service throughput {got['rate'] / base['rate']:.2f}x, service / compute alone "
                  f"{base['rate'] / compute:.2f} -> {got['rate'] / compute:.2f}, "
                  + (f"broker CPU per chunk {base['broker_ms']:.2f} -> {got['broker_ms']:.2f} ms "
                     f"({got['broker_ms'] / base['broker_ms'] - 1:+.0%}; without its JIT compiler "
                     f"{base['broker_work_ms']:.2f} -> {got['broker_work_ms']:.2f} ms, "
                     f"{got['broker_work_ms'] / base['broker_work_ms'] - 1:+.0%})"
                     if base["broker_work_ms"] and got["broker_work_ms"] else "broker CPU not measured (external broker)"))
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


def drain(args: argparse.Namespace, version: int, bank: list, compute: float, size: int) -> dict[str, float]:
    """Pre-produce --chunks records of chunk schema `version` to a fresh broker, let the
    service drain them; its sustained rate, the record size and the broker's CPU per chunk."""
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
    label = f"chunk schema v{version}" + (f" at {bits} bits" if version >= 2 else "")
    print(f"\n{label}: {statistics.mean(chunk_bytes) / 1e6:.2f} MB per record "
          f"(bank of {len(bank)}: {', '.join(f'{b / 1e6:.2f}' for b in chunk_bytes)}), "
          f"decode {decode_ms:.1f} ms CPU per record in this process")

    def record(song: str, index: int, last: bool, k: int) -> bytes:
        w = wire[k % len(wire)]
        return msgpack.packb({**w, "song_id": song, "filename": f"{song}.flac", "index": index, "last": last,
                              "produced_at": now()}, use_bin_type=True)

    work = Path(tempfile.mkdtemp(prefix="genre-bench-extractor-"))
    bootstrap, broker, security = tls_broker(work) if args.tls else (*external_or_local(work), {})
    settings, env, _ = harness.service_settings(bootstrap, "extractor", 1, partitions=args.partitions,
                                        extractor_backend="builtin", **security)
    proc = None
    log = work / "extractor.log"
    try:
        n = args.chunks
        produce_s = harness.pre_produce(settings, settings.topic_chunks, n, record)
        total = sum(chunk_bytes[k % len(bank)] for k in range(n))
        print(f"pre-produced {n} chunk messages ({total / 1e6:.0f} MB) in {produce_s:.1f} s")
        proc = harness.start_service("extractor", env, log)
        sampler = harness.CpuSampler(harness.process_pids("extractor", proc, broker, "bench (this process, waiting)"),
                                     harness.broker_jit(broker)).start()
        harness.wait_until_written(settings, settings.topic_features, n, timeout=600 + n)
        sampler.stop()
        feats = harness.read_all(settings, settings.topic_features, n, timeout=120)
        bad = [f.error for f in (decode(r.value, Features) for r in feats[:n]) if f.error]
        if bad:
            raise SystemExit(f"{len(bad)} features records carry errors, e.g. {bad[0]}")
        ts, k0, sustained = harness.sustained_window(feats, n)
        print(f"service sustained {n} chunks from Kafka: {sustained:7.1f} chunks/s "
              f"(first to last features record over {ts[-1] - ts[0]:.1f} s)")
        print(f"ratio service / compute alone: {sustained / compute:.2f}")
        print(harness.cpu_line(sampler, ts[k0], ts[-1], n - 1 - k0, compute, "extract_chunk alone"))
        broker_s = sampler.used("broker", ts[k0], ts[-1])
        jit_s = sampler.used("broker JIT compiler", ts[k0], ts[-1]) or 0.0
    finally:
        harness.tear_down(proc, settings, broker)
    print(f"service log: {log}")
    per_chunk = 1000 / (n - 1 - k0)
    return {"rate": sustained, "bytes": statistics.mean(chunk_bytes),
            "broker_ms": per_chunk * broker_s if broker_s else 0.0,
            "broker_work_ms": per_chunk * (broker_s - jit_s) if broker_s else 0.0}


if __name__ == "__main__":
    sys.exit(main())
