"""`genre train DATASET [DATASET ...] --out models/NAME`: extract (cached, in parallel) and train."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from shared.cli import EXIT_USAGE, CliError
from shared.featurespec import DEFAULT_SPEC, FeatureSpec

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
            "Uses DATASET/train when it exists, else DATASET itself as a <genre>/* tree. Several datasets "
            "(sources, each optionally NAME=PATH) are pooled: their genres are united, their song and artist ids "
            "kept apart by the source name."
        ),
    )
    p.add_argument("datasets", nargs="+", metavar="DATASET",
                   help="dataset folder (DATASET/train/<genre>/* or <genre>/*), optionally NAME=PATH (name default: "
                        "the folder name); several are trained on together")
    p.add_argument("--out", required=True, help="artifact folder to write (e.g. models/mine)")
    p.add_argument("--arch", choices=ARCHES, default="default",
                   help="network: default (= merged conv net, level-invariant inputs), merged, mfcc, contrast, "
                        "seed (the ancestor's Conv+LSTM model), tiny (for tests)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--manifest", action="append",
                   help="CSV (path,genre,artist) naming artists, so validation is split by artist; one per DATASET, "
                        "in order, '' for a dataset's own (default: each DATASET's split.csv or manifest.csv when "
                        "present, else by song)")
    p.add_argument("--name", help="model name used in the version (default: the --out folder name)")
    add_training_arguments(p)
    p.set_defaults(func=run)


def training_options(args: argparse.Namespace, sources: Sequence[str] | None) -> dict:
    """train_model's ensemble and per-source loss options from the command line (train, crossval)."""
    if args.members < 1:
        raise CliError(f"--members must be at least 1, got {args.members}", EXIT_USAGE)
    if not 0.0 <= args.absent_weight <= 1.0:
        raise CliError(f"--absent-weight must be between 0 and 1, got {args.absent_weight}", EXIT_USAGE)
    out: dict = {"members": args.members, "absent_weight": args.absent_weight}
    if sources is not None:
        out["sources"] = sources
    return out


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """The options that load_training_features and train_model read (train and crossval)."""
    from shared.training import DEFAULT_ABSENT_WEIGHT, DEFAULT_EPOCHS, DEFAULT_MEMBERS, DEFAULT_PATIENCE, DEFAULT_VALIDATION_FRACTION

    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"maximum epochs (default {DEFAULT_EPOCHS})")
    p.add_argument("--patience", type=int, default=DEFAULT_PATIENCE, help=f"early-stopping patience (default {DEFAULT_PATIENCE})")
    p.add_argument("--validation-fraction", type=float, default=DEFAULT_VALIDATION_FRACTION,
                   help=f"share of each genre's groups held out for early stopping (default {DEFAULT_VALIDATION_FRACTION})")
    p.add_argument("--members", type=int, default=DEFAULT_MEMBERS,
                   help=f"networks trained from seeds seed, seed+1, ... whose mean probability the model gives "
                        f"(default {DEFAULT_MEMBERS})")
    p.add_argument("--absent-weight", type=float, default=DEFAULT_ABSENT_WEIGHT, metavar="W",
                   help="with several datasets whose genres differ: how much a chunk's loss counts the genres its "
                        "own dataset lacks (0: not at all, 1: plain cross-entropy, so real recordings of 4 genres "
                        f"teach that a recording is never one of the others; default {DEFAULT_ABSENT_WEIGHT})")
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


Source = tuple[str, Path, str | None]  # (name, folder, manifest)


def dataset_sources(specs: Sequence[str], manifests: Sequence[str] | None) -> list[Source]:
    """(name, folder, manifest) of each dataset argument, with --manifest given once per
    dataset (an empty one: the dataset's own) or not at all; usage errors say what to give."""
    from shared.dataset import DatasetError, parse_sources

    try:
        sources = parse_sources(specs)
    except DatasetError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    manifests = list(manifests or [])
    if manifests and len(manifests) != len(sources):
        raise CliError(f"{len(manifests)} --manifest for {len(sources)} datasets; give one per dataset, in order, "
                       "or none (each dataset's own split.csv or manifest.csv is used)", EXIT_USAGE)
    for _, folder in sources:
        if not folder.is_dir():
            raise CliError(f"{folder} is not a folder", EXIT_USAGE)
    return [(n, f, m or None) for (n, f), m in zip(sources, manifests or [None] * len(sources))]


def load_training_features(args: argparse.Namespace, root: Path, manifest: str | None = None, *,
                           spec: FeatureSpec = DEFAULT_SPEC, gain_db: float = 0.0, desc: str = "features"):
    """(LabelledChunks, groups per chunk, song list, failures) of the songs under root/<genre>/,
    with the arrays of `spec` (v2, with the log-mel, for a pre-trained arch)."""
    from shared.dataset import DatasetError, load_labelled_songs
    from shared.evaluation import chunks_from_results
    from shared.feature_cache import extract_songs

    try:
        songs = load_labelled_songs(root, manifest=manifest)
    except DatasetError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if not songs:
        raise CliError(f"no audio files under {root}/<genre>/", EXIT_USAGE)
    results = extract_songs(
        [s[0] for s in songs], spec, jobs=max(1, args.jobs), backend=args.backend, gain_db=gain_db,
        use_cache=not args.no_cache, progress=sys.stderr.isatty(), desc=desc,
    )
    failed = [(r.path, r.error) for r in results if r.error]
    ok = [(r, s) for r, s in zip(results, songs) if not r.error]
    chunks, groups = chunks_from_results([r for r, _ in ok], [s[1] for _, s in ok], [s[2] for _, s in ok])
    return chunks, groups, songs, failed


def load_sources(args: argparse.Namespace, sources: Sequence[Source], *,
                 folders: Callable[[Path], list[Path]] = lambda f: [f],
                 regroup: Callable | None = None, spec: FeatureSpec = DEFAULT_SPEC, gain_db: float = 0.0,
                 desc: str = "features"):
    """(chunks, groups, songs found, failures) of every source's `folders`, pooled by
    pool_sources; `regroup(chunks, groups)` adjusts a source's groups before its ids get the prefix."""
    from shared.evaluation import concat_chunks, pool_sources

    parts, n_songs, failed = [], 0, []
    for name, folder, manifest in sources:
        loaded = [load_training_features(args, root, manifest, spec=spec, gain_db=gain_db, desc=desc)
                  for root in folders(folder)]
        chunks = concat_chunks([c for c, _, _, _ in loaded])
        groups = [g for _, gs, _, _ in loaded for g in gs]
        parts.append((name, chunks, regroup(chunks, groups) if regroup else groups))
        n_songs += sum(len(s) for _, _, s, _ in loaded)
        failed += [f for *_, fs in loaded for f in fs]
    chunks, groups = pool_sources(parts)
    return chunks, groups, n_songs, failed


def warn_skipped(failed: Sequence[tuple[str, str]]) -> None:
    for path, why in failed:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from shared.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    from shared.datapaths import data_location
    from shared.dataset import training_side
    from shared.evaluation import plot_curves, songs_per_source
    from shared.training import train_model

    from shared.model import arch_spec

    sources = dataset_sources(args.datasets, args.manifest)
    out = Path(args.out)
    spec = arch_spec(args.arch)
    t0 = time.perf_counter()
    chunks, groups, n_songs, failed = load_sources(args, sources, folders=lambda f: [training_side(f)], spec=spec)
    warn_skipped(failed)
    t_feat = time.perf_counter() - t0
    genres = sorted(set(chunks.labels))
    if len(genres) < 2:
        where = ", ".join(str(training_side(f)) for _, f, _ in sources)
        raise CliError(f"need at least two genres with readable songs under {where}, found {genres}", EXIT_USAGE)
    per_source = songs_per_source(chunks)
    print(f"{n_songs - len(failed)} songs, {len(chunks)} chunks, {len(genres)} genres: {', '.join(genres)} "
          + (f"({', '.join(f'{n} {k}' for n, k in per_source.items())}) " if per_source else "")
          + f"(features in {t_feat:.0f} s)", file=sys.stderr)
    several = len(sources) > 1
    training_meta = {"dataset": "+".join(n for n, _, _ in sources) if several else sources[0][1].name,
                     "songs": n_songs - len(failed), "skipped_songs": len(failed), "backend": args.backend}
    if several:
        training_meta["sources"] = {n: {**data_location(f), "songs": per_source.get(n, 0)} for n, f, _ in sources}
    else:
        training_meta["data"] = data_location(sources[0][1])
    set_tf_threads(args.threads)
    t1 = time.perf_counter()
    artifact = train_model(
        chunks.features, chunks.labels, groups, arch=args.arch, epochs=args.epochs, seed=args.seed,
        validation_fraction=args.validation_fraction, name=args.name or out.name, progress=sys.stderr.isatty(),
        patience=args.patience, songs=chunks.songs, n_samples=chunks.n_samples, spec=spec,
        **training_options(args, chunks.sources),
        extra_metadata={"training": training_meta},
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
