"""`genre evaluate MODEL DATASET/test`: song- and chunk-level scores, baseline, seed, plots."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from shared.cli import EXIT_USAGE, CliError

DEFAULT_GAINS_DB = (-12.0, 6.0)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a model on DATASET/test: song and chunk accuracy, per-genre F1, baseline, seed, plots",
        description=(
            "Chunk-level and song-level accuracy (song = mode of chunk votes, ties by summed probability), "
            "per-genre precision/recall/F1, a classical baseline (logistic regression on per-chunk MFCC and "
            "contrast mean/std) trained on the train side of the same split, the ancestor's seed architecture "
            "(--seed-model, or trained identically on the train side unless --no-seed), and the agreement of "
            "the song verdicts when the test audio is scaled by each --gain (dB)."
        ),
    )
    p.add_argument("model", help="model artifact folder")
    p.add_argument("test", help="test side of a split: <genre>/* (e.g. DATASET/test)")
    p.add_argument("--train", help="train side for the baseline and seed (default: the sibling 'train' folder)")
    p.add_argument("--manifest", help="CSV naming artists (for the seed model's validation split), as for train")
    p.add_argument("--seed-model", help="a trained --arch seed artifact to report (default: train one identically)")
    p.add_argument("--no-seed", action="store_true", help="do not report the seed architecture")
    p.add_argument("--no-baseline", action="store_true", help="do not train and report the classical baseline")
    p.add_argument("--gain", dest="gains", type=float, action="append", metavar="DB",
                   help="a gain in dB for the loudness check, repeatable (default: --gain -12 --gain 6)")
    p.add_argument("--no-gain-check", action="store_true", help="skip the loudness check")
    p.add_argument("--out", help="folder for report.json, confusion.png and curves.png")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("--jobs", type=int, default=0, help="feature-extraction processes (default: all cores)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow threads (default 0: TensorFlow decides)")
    p.add_argument("--backend", default="builtin", help="feature extractor backend: builtin or sonic-annotator")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--keep-predictions", action="store_true", help="keep per-song predictions in the JSON report")
    p.set_defaults(func=run)


def _labelled(root: Path, args: argparse.Namespace, gain_db: float = 0.0, desc: str = "features"):
    from shared.dataset import DatasetError, load_labelled_songs
    from shared.evaluation import chunks_from_results
    from shared.feature_cache import extract_songs

    try:
        songs = load_labelled_songs(root, manifest=args.manifest)
    except DatasetError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if not songs:
        raise CliError(f"no audio files under {root}/<genre>/", EXIT_USAGE)
    results = extract_songs(
        [s[0] for s in songs], jobs=args.jobs, backend=args.backend, gain_db=gain_db,
        use_cache=not args.no_cache, progress=sys.stderr.isatty(), desc=desc,
    )
    failed = [(r.path, r.error) for r in results if r.error]
    ok = [(r, s) for r, s in zip(results, songs) if not r.error]
    chunks, groups = chunks_from_results([r for r, _ in ok], [s[1] for _, s in ok], [s[2] for _, s in ok])
    return chunks, groups, failed


def run(args: argparse.Namespace) -> int:
    from shared.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    import os

    from shared.cli.train import set_tf_threads
    from shared.evaluation import baseline, format_table, plot_confusion, plot_curves, score, song_agreement, song_predictions
    from shared.model import ModelArtifact, ModelLoadError

    args.jobs = args.jobs if args.jobs > 0 else (os.cpu_count() or 1)
    gains = [] if args.no_gain_check else (args.gains if args.gains else list(DEFAULT_GAINS_DB))
    set_tf_threads(args.threads)
    try:
        model = ModelArtifact.load(args.model)
    except ModelLoadError as exc:
        raise CliError(str(exc)) from exc
    test_root = Path(args.test)
    if not test_root.is_dir():
        raise CliError(f"{test_root} is not a folder", EXIT_USAGE)
    train_root = Path(args.train) if args.train else test_root.parent / "train"

    t0 = time.perf_counter()
    test, _, failed = _labelled(test_root, args, desc="test features")
    for path, why in failed:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    if not len(test):
        raise CliError(f"no readable songs under {test_root}", 1)
    t1 = time.perf_counter()
    probs = model.predict(test.features)
    predict_s = time.perf_counter() - t1
    report = score(probs, test, model.genres)
    report.update({
        "model": str(args.model),
        "model_version": model.version,
        "arch": model.metadata.get("arch"),
        "test": str(test_root),
        "skipped_songs": [{"path": p, "reason": r} for p, r in failed],
        "inference_ms_per_chunk": round(1000 * predict_s / len(test), 3),
        "device": model.device,
    })
    verdicts0 = song_predictions(probs, test.songs, model.genres)

    report["gain_agreement"] = {}
    scaled_sets = {}
    for g in gains:
        scaled, _, _ = _labelled(test_root, args, gain_db=g, desc=f"test {g:+g} dB")
        scaled_sets[g] = scaled
        p_g = model.predict(scaled.features)
        report["gain_agreement"][f"{g:+g}"] = song_agreement(verdicts0, song_predictions(p_g, scaled.songs, model.genres))
        report.setdefault("gain_song_accuracy", {})[f"{g:+g}"] = score(p_g, scaled, model.genres)["song_accuracy"]

    train = train_groups = None
    if not (args.no_baseline and (args.no_seed or args.seed_model)):
        if not train_root.is_dir():
            print(f"warning: no train side at {train_root}; baseline and seed are not reported "
                  "(give --train)", file=sys.stderr)
        else:
            train, train_groups, _ = _labelled(train_root, args, desc="train features")

    report["baseline"] = None
    if not args.no_baseline and train is not None:
        report["baseline"] = _slim(baseline(train, test), args.keep_predictions)

    report["seed"] = None
    if args.seed_model:
        try:
            seed_model = ModelArtifact.load(args.seed_model)
        except ModelLoadError as exc:
            raise CliError(f"--seed-model: {exc}") from exc
        report["seed"] = _slim(score(seed_model.predict(test.features), test, seed_model.genres), args.keep_predictions)
        report["seed"]["model_version"] = seed_model.version
    elif not args.no_seed and train is not None:
        report["seed"] = _train_seed(model, train, train_groups, test)
        report["seed"] = _slim(report["seed"], args.keep_predictions)
    if report["seed"] is not None:
        seed_art = seed_model if args.seed_model else _SEED_CACHE["artifact"]
        seed0 = song_predictions(seed_art.predict(test.features), test.songs, seed_art.genres)
        report["seed"]["gain_agreement"] = {
            f"{g:+g}": song_agreement(seed0, song_predictions(seed_art.predict(sc.features), sc.songs, seed_art.genres))
            for g, sc in scaled_sets.items()
        }
    report["evaluate_seconds"] = round(time.perf_counter() - t0, 1)
    report["training"] = {
        k: model.metadata.get("training", {}).get(k)
        for k in ("epochs_run", "best_epoch", "chunks_train", "chunks_validation", "songs")
    }
    report["training"]["train_seconds"] = (model.metadata.get("created") or {}).get("train_seconds")
    report = _slim(report, args.keep_predictions)

    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        cm = report["confusion"]
        plot_confusion(cm["matrix"], cm["labels"], out / "confusion.png",
                       f"{model.version}: song accuracy {report['song_accuracy']:.3f} ({report['songs']} songs)")
        tr = model.metadata.get("training", {})
        if tr.get("history"):
            plot_curves(tr["history"], out / "curves.png", f"{model.version} ({model.metadata.get('arch')})",
                        tr.get("best_epoch"))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_table(report))
    return 0


def _slim(report: dict, keep_predictions: bool) -> dict:
    if not keep_predictions:
        report.pop("predictions", None)
    return report


_SEED_CACHE: dict = {}


def _train_seed(model, train, train_groups, test) -> dict:
    """Train --arch seed with the model's own training settings on the same train chunks."""
    from shared.evaluation import score
    from shared.training import train_model

    tr = model.metadata.get("training", {})
    t0 = time.perf_counter()
    seed_art = train_model(
        train.features, train.labels, train_groups, arch="seed",
        epochs=int(tr.get("epochs_max", 80)), seed=int(tr.get("seed", 0)),
        validation_fraction=float(tr.get("validation_fraction", 0.15)), patience=int(tr.get("patience", 15)),
        batch_size=int(tr.get("batch_size", 32)), learning_rate=float(tr.get("learning_rate", 1e-3)),
        augment=tr.get("augment", "none") != "none", name="seed", progress=sys.stderr.isatty(),
        songs=train.songs, n_samples=train.n_samples,
    )
    _SEED_CACHE["artifact"] = seed_art
    rep = score(seed_art.predict(test.features), test, seed_art.genres)
    rep["model_version"] = seed_art.version
    rep["train_seconds"] = round(time.perf_counter() - t0, 1)
    rep["epochs_run"] = seed_art.metadata["training"]["epochs_run"]
    return rep
