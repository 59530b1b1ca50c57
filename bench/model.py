"""Inference cost per chunk of the shipped model against the Vamp-only network and the ancestor's seed architecture.

    python bench/model.py [--model models/default] [--seed-model DIR] [--compare DIR ...] [--batch 64] [--threads 1]

Every network runs through ModelArtifact.predict_arrays (the path the classifier uses:
one tf.function, no keras predict()), on the same prepared input arrays, in one process,
on the same device. Without --seed-model, the seed network is built with the default
model's genres and frame counts; the Vamp-only `merged` network (the shipped model before
it read a pre-trained network) likewise. Their weights do not matter for timing, and
nothing they output is used. When the shipped model reads the log-mel, the extractor's
added cost (`log_mel_chunk` per 30-s chunk) is timed too. `--compare` times other artifacts
beside it, for example the same model with the frozen network it was trained with
(`tools/rebuild_frozen_network.py --out`). Prints ms per chunk at batch 1
and at --batch, the ratios, and the process's peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(art, batch: int, repeats: int, rng) -> float:
    import numpy as np

    arrays = {
        name: rng.standard_normal((batch, art.frames[name], art.widths[name])).astype(np.float32)
        for name in art.input_names
    }
    art.predict_arrays(arrays)  # trace + warm up
    art.predict_arrays(arrays)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        art.predict_arrays(arrays)
        best = min(best, time.perf_counter() - t0)
    return 1000.0 * best / batch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/default")
    ap.add_argument("--seed-model", default=None)
    ap.add_argument("--compare", nargs="*", default=[], metavar="DIR", help="other artifacts to time beside --model")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="TensorFlow intra/inter-op threads (0: TF decides)")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    if args.threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from shared.model import PRETRAINED_INPUT, ModelArtifact

    model = ModelArtifact.load(args.model)
    others = [(ModelArtifact.load(args.seed_model), None)] if args.seed_model else [(timing_only(model, "seed"), "seed architecture (untrained, timing only)")]
    if PRETRAINED_INPUT in model.input_names:
        others.insert(0, (timing_only(model, "merged"), "merged, Vamp only (untrained, timing only)"))
    for folder in reversed(args.compare):
        other = ModelArtifact.load(folder)
        others.insert(0, (other, f"{folder} ({other.version})"))
    rng = np.random.default_rng(0)
    print(f"device {model.device}, TF threads {args.threads or 'auto'}, best of {args.repeats}")
    print(f"{'model':<48}{'params':>10}{'ms/chunk b=1':>14}{f'ms/chunk b={args.batch}':>16}")
    rows = {}
    for label, art in [(f"{model.version} ({model.metadata.get('arch')})", model)] + [(n or a.version, a) for a, n in others]:
        one = timed(art, 1, max(3, args.repeats // 4), rng)
        many = timed(art, args.batch, max(3, args.repeats // 8), rng)
        rows[label] = many
        print(f"{label:<48}{art.model.count_params():>10}{one:>14.3f}{many:>16.3f}")
    shipped = next(iter(rows.values()))
    for (label, ms) in list(rows.items())[1:]:
        print(f"default / {label.split(' ')[0].rstrip(',')} at batch {args.batch}: {shipped / ms:.2f}x")
    if PRETRAINED_INPUT in model.input_names:
        from shared.logmel import log_mel_chunk

        pcm = (0.1 * rng.standard_normal(model.spec.chunk_samples)).astype(np.float32)
        log_mel_chunk(pcm, model.spec.sample_rate)
        best = min(_seconds(lambda: log_mel_chunk(pcm, model.spec.sample_rate)) for _ in range(max(3, args.repeats // 4)))
        print(f"extractor side: log-mel {1000 * best:.1f} ms per chunk (added to the Vamp features under spec v{model.spec.version})")
    hwm = peak_rss_mb()
    if hwm is not None:
        print(f"peak RSS of this process (VmHWM, every network above loaded and run): {hwm:.0f} MB")
    return 0


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB (VmHWM), or None where /proc has no status."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return None


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timing_only(model, arch: str):
    """An untrained `arch` network with the shipped model's genres and frame counts (timing only)."""
    from shared.model import VAMP_INPUTS, ModelArtifact, build_network

    meta = dict(model.metadata)
    frames = {k: model.frames[k] for k in VAMP_INPUTS}
    widths = {k: model.widths[k] for k in VAMP_INPUTS}
    net = build_network(arch, len(model.genres), frames, widths)
    loudness = "none" if arch == "seed" else "chunk"
    meta.update(arch=arch, name=f"{arch}-timing-only", version=f"{arch}-timing-only", frames_per_chunk=frames,
                preprocessing={"loudness": loudness, "normalisation": {
                    k: {"mean": [0.0] * widths[k], "std": [1.0] * widths[k]} for k in VAMP_INPUTS}})
    return ModelArtifact(net, meta)


if __name__ == "__main__":
    sys.exit(main())
