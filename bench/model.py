"""Inference cost per chunk of the shipped model against the ancestor's seed architecture.

    python bench/model.py [--model models/default] [--seed-model DIR] [--batch 64] [--threads 1]

Both networks run through ModelArtifact.predict_arrays (the path the classifier uses:
one tf.function, no keras predict()), on the same prepared input arrays, in one process,
on the same device. Without --seed-model, the seed network is built with the default
model's genres and frame counts; its weights do not matter for timing, and nothing it
outputs is used. Prints ms per chunk at batch 1 and at --batch, and the ratio.
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
    from shared.model import ModelArtifact, build_network

    model = ModelArtifact.load(args.model)
    if args.seed_model:
        seed = ModelArtifact.load(args.seed_model)
        seed_note = seed.version
    else:
        meta = dict(model.metadata)
        net = build_network("seed", len(model.genres), model.frames, model.widths)
        meta.update(arch="seed", name="seed-timing-only", version="seed-timing-only",
                    preprocessing={"loudness": "none", "normalisation": {
                        k: {"mean": [0.0] * model.widths[k], "std": [1.0] * model.widths[k]} for k in ("mfcc", "peaks")}})
        seed = ModelArtifact(net, meta)
        seed_note = "seed architecture (untrained, timing only)"
    rng = np.random.default_rng(0)
    print(f"device {model.device}, TF threads {args.threads or 'auto'}, best of {args.repeats}")
    print(f"{'model':<48}{'params':>10}{'ms/chunk b=1':>14}{f'ms/chunk b={args.batch}':>16}")
    rows = {}
    for label, art in ((f"{model.version} ({model.metadata.get('arch')})", model), (seed_note, seed)):
        one = timed(art, 1, args.repeats, rng)
        many = timed(art, args.batch, max(3, args.repeats // 4), rng)
        rows[label] = many
        print(f"{label:<48}{art.model.count_params():>10}{one:>14.3f}{many:>16.3f}")
    a, b = list(rows.values())
    print(f"seed / default at batch {args.batch}: {b / a:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
