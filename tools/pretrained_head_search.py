"""Which head on the frozen pre-trained embedding names genres best? A small, honest search.

    python tools/pretrained_head_search.py real=$CACHE/datasets/emotify midi=$CACHE/render/r90 [--variant NAME]... [--seeds 0 1 2]

Loads both sources' train and test sides through the feature and embedding caches (as
`genre train` and `genre evaluate` do), then trains each variant of `train_model` (the
pretrained arch with other head settings) on the pooled train sides and scores song
accuracy per source on the test sides (first 3 chunks, mode vote), plus classical
classifiers on the per-chunk embedding statistics for reference. Prints one line per
variant and seed; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"absent_weight": 1.0},
    "shipped": {"source_mask": True},
    "no-vamp": {"head_options": {"vamp": False}},
    "no-vamp-mixup": {"head_options": {"vamp": False}, "mixup": 0.4},
    "no-vamp-linear": {"head_options": {"vamp": False, "units": 0}},
    "moments-linear": {"head_options": {"vamp": False, "units": 0, "pool": "moments", "l2": 1e-3}},
    "moments-linear-vamp": {"head_options": {"units": 0, "pool": "moments", "l2": 1e-3}},
    "moments": {"head_options": {"vamp": False, "pool": "moments"}},
    "wide": {"head_options": {"units": 256}},
    "low-dropout": {"head_options": {"dropout": 0.3}},
    "mixup": {"mixup": 0.4},
    "source-mask": {"source_mask": True, "absent_weight": 0.0},
    "no-vamp-source-mask": {"head_options": {"vamp": False}, "source_mask": True, "absent_weight": 0.0},
    "source-soft-0.03": {"source_mask": True, "absent_weight": 0.03},
    "source-soft-0.1": {"source_mask": True, "absent_weight": 0.1},
    "source-soft-0.3": {"source_mask": True, "absent_weight": 0.3},
    "no-vamp-source-soft-0.1": {"head_options": {"vamp": False}, "source_mask": True, "absent_weight": 0.1},
}


def load(spec_sources: list[str]):
    from shared.cli.train import dataset_sources, load_sources
    from shared.featurespec import MEL_SPEC

    args = argparse.Namespace(jobs=2, backend="builtin", no_cache=False)
    sources = dataset_sources(spec_sources, None)
    train = load_sources(args, sources, folders=lambda f: [f / "train"], spec=MEL_SPEC)[:2]
    test = load_sources(args, sources, folders=lambda f: [f / "test"], spec=MEL_SPEC)[0]
    return train, test


def per_source(probs: np.ndarray, test, genres: list[str], first: int = 3) -> dict[str, float]:
    from shared.crossval import chunk_positions
    from shared.evaluation import song_predictions

    keep = chunk_positions(test.songs) < first
    songs = [s for s, k in zip(test.songs, keep) if k]
    truth = {s: y for s, y, k in zip(test.songs, test.labels, keep) if k}
    verdicts = song_predictions(probs[keep], songs, genres)
    out: dict[str, list[bool]] = {}
    for s, v in verdicts.items():
        source = s.split(":", 1)[0]
        out.setdefault(source, []).append(v == truth[s])
        if source != "midi":
            out.setdefault(f"{source}/{truth[s]}", []).append(v == truth[s])
    return {k: round(float(np.mean(v)), 3) for k, v in sorted(out.items())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--also", action="append", default=[], metavar="NAME=DIR",
                    help="also score on a labelled <genre>/ folder of another source (e.g. recordings of every genre)")
    ap.add_argument("--ensemble", action="store_true", help="also score the mean probabilities of each variant's seeds")
    ap.add_argument("--classical", action="store_true", help="also logistic regression on embedding mean/std")
    args = ap.parse_args()
    from shared.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    from shared.featurespec import MEL_SPEC
    from shared.training import predict_chunks, pretrained_embeddings, train_model

    (train, groups), test = load(args.datasets)
    if args.also:
        from shared.cli.train import dataset_sources, load_sources
        from shared.evaluation import concat_chunks

        from dataclasses import replace

        for name, folder, manifest in dataset_sources(args.also, None):
            extra = load_sources(argparse.Namespace(jobs=2, backend="builtin", no_cache=False),
                                 [(name, folder, manifest)], spec=MEL_SPEC)[0]
            test = concat_chunks([test, replace(extra, songs=[f"{name}:{s}" for s in extra.songs], sources=None)])
    print(f"train {len(train)} chunks, test {len(test)} chunks", flush=True)
    if args.classical:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        emb, e_tr = pretrained_embeddings(train.features)
        _, e_te = pretrained_embeddings(test.features, embedder=emb)
        stats = lambda e: np.concatenate([e.mean(1), e.std(1)], axis=1)  # noqa: E731
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced"))
        clf.fit(stats(e_tr), train.labels)
        probs = clf.predict_proba(stats(e_te))
        print(f"{'logistic regression':<16} {per_source(probs, test, [str(c) for c in clf.classes_])}", flush=True)
    for name in args.variant or ["shipped"]:
        members = []
        for seed in args.seeds:
            t0 = time.perf_counter()
            options = dict(VARIANTS[name])
            if options.pop("source_mask", False):
                options["sources"] = train.sources
            art = train_model(train.features, train.labels, groups, arch="pretrained", spec=MEL_SPEC, seed=seed,
                              songs=train.songs, n_samples=train.n_samples, **options)
            probs = predict_chunks(art, test.features)
            members.append(probs)
            print(f"{name:<16} seed {seed}: {per_source(probs, test, art.genres)} "
                  f"({art.metadata['training']['epochs_run']} epochs, {time.perf_counter() - t0:.0f} s)", flush=True)
        if args.ensemble and len(members) > 1:
            print(f"{name:<16} mean of {len(members)} seeds: {per_source(np.mean(members, axis=0), test, art.genres)}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
