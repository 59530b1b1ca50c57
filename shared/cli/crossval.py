"""`genre crossval DATASET [DATASET ...]`: K-fold cross-validation by artist of architectures
and the baseline, over all songs of one or several datasets (both sides of a split),
scored per source and pooled."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.cli import EXIT_USAGE, CliError
from shared.featurespec import FeatureSpec


def register(subparsers: argparse._SubParsersAction) -> None:
    from shared.cli.train import add_training_arguments
    from shared.model import ARCHES

    p = subparsers.add_parser(
        "crossval",
        help="K-fold cross-validation by artist of architectures and the baseline over all songs",
        description=(
            "Pool every song of DATASET (DATASET/train and DATASET/test when both exist, else DATASET as "
            "<genre>/*), split it into K folds with each artist in one fold and genres stratified, and for "
            "each fold train every --arch as `genre train` does (same settings, early stopping on an artist-"
            "disjoint validation split of the training side) and the classical baseline, then score the "
            "held-out songs as `genre evaluate` does (song = mode of the chunk votes). Prints pooled and per-"
            "fold song accuracy and the first arch's gain over each other model. On a small dataset this "
            "is a steadier comparison than one test split. Several datasets (sources, each optionally NAME=PATH) "
            "are pooled into the folds (their artists kept apart by the source name) and scored per source too."
        ),
    )
    p.add_argument("datasets", nargs="+", metavar="DATASET",
                   help="dataset folder: a split (train/ and test/) or a <genre>/* tree, optionally NAME=PATH (name "
                        "default: the folder name)")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--arch", dest="archs", action="append", choices=ARCHES, metavar="ARCH",
                   help="architecture to cross-validate, repeatable; the first is compared with the others "
                        f"(default: --arch default --arch seed; choices: {', '.join(ARCHES)})")
    p.add_argument("--no-baseline", action="store_true", help="do not cross-validate the classical baseline")
    p.add_argument("--test-chunks", type=int, default=0, metavar="N",
                   help="score each held-out song on its first N chunks only (e.g. 3 = the first 90 s; default all)")
    p.add_argument("--group-by", choices=("artist", "song"), default="artist",
                   help="keep each artist's songs in one fold (default; the artist comes from --manifest, else from "
                        "an 'artist-title' file name, else the song is its own group) or only each song's chunks")
    p.add_argument("--manifest", action="append",
                   help="CSV (path,genre,artist) naming artists, one per DATASET in order, '' for a dataset's own "
                        "(default: each dataset's split.csv or manifest.csv beside the songs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and the training (default 0)")
    p.add_argument("--out", help="folder for crossval.json and confusion.png (the first arch, pooled over folds; "
                                 "also confusion-NAME.png per source when several)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    add_training_arguments(p)
    p.set_defaults(func=run)


def _both_sides(root: Path) -> list[Path]:
    return [root / "train", root / "test"] if (root / "train").is_dir() and (root / "test").is_dir() else [root]


def _all_songs(args: argparse.Namespace, sources, spec: FeatureSpec):
    """Chunks and groups of every song under the datasets, both sides of a split."""
    from shared.cli.train import load_sources, warn_skipped
    from shared.dataset import artist_from_name

    def regroup(chunks, groups: list[str]) -> list[str]:
        if args.group_by == "song":
            return [f"song:{s}" for s in chunks.songs]
        named = {s: artist_from_name(Path(s)) for s in set(chunks.songs)}
        return [f"artist:{named[s]}" if g.startswith("song:") and named[s] else g for g, s in zip(groups, chunks.songs)]

    chunks, groups, _, failed = load_sources(args, sources, folders=_both_sides, regroup=regroup, spec=spec)
    warn_skipped(failed)
    return chunks, groups


def run(args: argparse.Namespace) -> int:
    from shared.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    from shared.cli.train import dataset_sources, set_tf_threads, training_options
    from shared.crossval import CrossValidationError, cross_validate, format_crossval
    from shared.datapaths import data_location
    from shared.evaluation import plot_confusions

    archs = args.archs or ["default", "seed"]
    if args.test_chunks < 0:
        raise CliError("--test-chunks must be 0 (all) or more", EXIT_USAGE)
    from shared.featurespec import DEFAULT_SPEC, MEL_SPEC
    from shared.model import PRETRAINED_INPUT, arch_inputs

    sources = dataset_sources(args.datasets, args.manifest)
    # a v1 arch reads the same Vamp arrays from v2 features
    spec = MEL_SPEC if any(PRETRAINED_INPUT in arch_inputs(a) for a in archs) else DEFAULT_SPEC
    chunks, groups = _all_songs(args, sources, spec)
    set_tf_threads(args.threads)
    n_songs = len(set(chunks.songs))
    print(f"{n_songs} songs, {len(chunks)} chunks, {len(set(groups))} groups, {len(set(chunks.labels))} genres; "
          f"{args.folds} folds x ({', '.join(archs)}{'' if args.no_baseline else ', baseline'})", file=sys.stderr)

    def progress(k: int, row: dict) -> None:
        accs = ", ".join(f"{n} {a:.3f}" for n, a in row["song_accuracy"].items())
        print(f"fold {k + 1}/{args.folds}: {row['songs']} songs, {row['groups']} groups: {accs}", file=sys.stderr)

    try:
        report = cross_validate(
            chunks, groups, folds=args.folds, archs=archs, with_baseline=not args.no_baseline,
            test_chunks=args.test_chunks or None, seed=args.seed, on_fold=progress,
            train_kwargs={"epochs": args.epochs, "patience": args.patience,
                          "validation_fraction": args.validation_fraction, "progress": sys.stderr.isatty(),
                          **training_options(args, None)},
        )
    except CrossValidationError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    report["dataset"] = data_location(sources[0][1]) if len(sources) == 1 else {n: data_location(f) for n, f, _ in sources}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "crossval.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        first = report["models"][archs[0]]
        plot_confusions(first, out, f"{archs[0]}, {args.folds}-fold by artist")
    print(json.dumps(report, indent=2) if args.json else format_crossval(report))
    return 0
