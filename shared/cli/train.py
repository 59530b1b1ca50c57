"""`genre train DATASET --out models/NAME`: extract (cached, in parallel) and train."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from shared.cli import EXIT_USAGE, CliError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from shared.model import ARCHES

    p = subparsers.add_parser(
        "train",
        help="train a genre model on DATASET/train/<genre>/* and write a model artifact",
        description=(
            "Decode and chunk every song, extract features with the services' own code (in parallel, cached "
            "on disk by content hash), train the chosen architecture and write a model artifact folder "
            "(model.keras + metadata.json + curves.png). Label indices come from the sorted genre names. "
            "Uses DATASET/train when it exists, else DATASET itself as a <genre>/* tree."
        ),
    )
    p.add_argument("dataset", help="dataset folder (DATASET/train/<genre>/* or <genre>/*)")
    p.add_argument("--out", required=True, help="artifact folder to write (e.g. models/mine)")
    p.add_argument("--arch", choices=ARCHES, default="default",
                   help="network: default (= merged conv net, level-invariant inputs), merged, mfcc, contrast, "
                        "seed (the ancestor's Conv+LSTM model), tiny (for tests)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--manifest", help="CSV (path,genre,artist) naming artists, so validation is split by artist "
                                      "(default: DATASET/split.csv when present, else by song)")
    p.add_argument("--name", help="model name used in the version (default: the --out folder name)")
    add_training_arguments(p)
    p.set_defaults(func=run)


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """The options that load_training_features and train_model read (train and crossval)."""
    from shared.training import DEFAULT_EPOCHS, DEFAULT_PATIENCE, DEFAULT_VALIDATION_FRACTION

    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"maximum epochs (default {DEFAULT_EPOCHS})")
    p.add_argument("--patience", type=int, default=DEFAULT_PATIENCE, help=f"early-stopping patience (default {DEFAULT_PATIENCE})")
    p.add_argument("--validation-fraction", type=float, default=DEFAULT_VALIDATION_FRACTION,
                   help=f"share of each genre's groups held out for early stopping (default {DEFAULT_VALIDATION_FRACTION})")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="feature-extraction processes (default: all cores)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow threads for training (default 0: TensorFlow decides)")
    p.add_argument("--backend", default="builtin", help="feature extractor backend: builtin or sonic-annotator")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")


def set_tf_threads(threads: int) -> None:
    if threads <= 0:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as exc:  # already initialised
        logger.debug("cannot set TensorFlow threads: %s", exc)


def load_training_features(args: argparse.Namespace, root: Path):
    """(LabelledChunks, groups per chunk, song list, failures) of the training side."""
    from shared.dataset import DatasetError, load_labelled_songs
    from shared.evaluation import chunks_from_results
    from shared.feature_cache import extract_songs
    from shared.featurespec import DEFAULT_SPEC

    try:
        songs = load_labelled_songs(root, manifest=getattr(args, "manifest", None))
    except DatasetError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if not songs:
        raise CliError(f"no audio files under {root}/<genre>/", EXIT_USAGE)
    results = extract_songs(
        [s[0] for s in songs], DEFAULT_SPEC, jobs=max(1, args.jobs), backend=args.backend,
        use_cache=not args.no_cache, progress=sys.stderr.isatty(), desc="features",
    )
    failed = [(r.path, r.error) for r in results if r.error]
    for path, why in failed:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    ok = [(r, s) for r, s in zip(results, songs) if not r.error]
    chunks, groups = chunks_from_results([r for r, _ in ok], [s[1] for _, s in ok], [s[2] for _, s in ok])
    return chunks, groups, songs, failed


def run(args: argparse.Namespace) -> int:
    from shared.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    from shared.dataset import training_side
    from shared.evaluation import plot_curves
    from shared.training import train_model

    root = training_side(args.dataset)
    if not root.is_dir():
        raise CliError(f"{args.dataset} is not a folder", EXIT_USAGE)
    out = Path(args.out)
    t0 = time.perf_counter()
    chunks, groups, songs, failed = load_training_features(args, root)
    t_feat = time.perf_counter() - t0
    genres = sorted(set(chunks.labels))
    if len(genres) < 2:
        raise CliError(f"need at least two genres with readable songs under {root}, found {genres}", EXIT_USAGE)
    print(f"{len(songs) - len(failed)} songs, {len(chunks)} chunks, {len(genres)} genres: {', '.join(genres)} "
          f"(features in {t_feat:.0f} s)", file=sys.stderr)
    set_tf_threads(args.threads)
    t1 = time.perf_counter()
    artifact = train_model(
        chunks.features, chunks.labels, groups, arch=args.arch, epochs=args.epochs, seed=args.seed,
        validation_fraction=args.validation_fraction, name=args.name or out.name, progress=sys.stderr.isatty(),
        patience=args.patience, songs=chunks.songs, n_samples=chunks.n_samples,
        extra_metadata={"training": {"dataset": str(Path(args.dataset).name), "songs": len(songs) - len(failed),
                                     "skipped_songs": len(failed), "backend": args.backend}},
    )
    t_train = time.perf_counter() - t1
    artifact.metadata["created"] = {"train_seconds": round(t_train, 1), "feature_seconds": round(t_feat, 1)}
    artifact.save(out)
    tr = artifact.metadata["training"]
    plot_curves(tr["history"], out / "curves.png", f"{artifact.version} ({artifact.metadata['arch']})", tr.get("best_epoch"))
    m = artifact.metadata["metrics"]
    print(f"wrote {out} version {artifact.version}: {tr['epochs_run']} epochs (best {tr['best_epoch']}), "
          f"validation song accuracy {m.get('validation_song_accuracy', float('nan')):.3f}, "
          f"chunk {m.get('validation_chunk_accuracy', float('nan')):.3f}; trained in {t_train:.0f} s")
    return 0
