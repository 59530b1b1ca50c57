"""`genre evaluate MODEL DATASET/test [DIR ...]`: song- and chunk-level scores (per source and
pooled), baseline, seed, plots."""

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
            "the song verdicts when the test audio is scaled by each --gain (dB). With several test folders "
            "(sources, each optionally NAME=PATH) every score is given per source and pooled over all of them."
        ),
    )
    p.add_argument("model", help="model artifact folder")
    p.add_argument("tests", nargs="+", metavar="DIR",
                   help="test side of a split: <genre>/* (e.g. DATASET/test), optionally NAME=PATH (name default: "
                        "the dataset folder's name); several are scored separately and pooled")
    p.add_argument("--train", action="append",
                   help="train side for the baseline and seed, one per DIR in order (default: each DIR's sibling "
                        "'train' folder)")
    p.add_argument("--manifest", action="append",
                   help="CSV naming artists (for the seed model's validation split), one per DIR in order, '' for a "
                        "folder's own, as for train")
    p.add_argument("--seed-model", help="a trained --arch seed artifact to report (default: train one identically)")
    p.add_argument("--no-seed", action="store_true", help="do not report the seed architecture")
    p.add_argument("--no-baseline", action="store_true", help="do not train and report the classical baseline")
    p.add_argument("--gain", dest="gains", type=float, action="append", metavar="DB",
                   help="a gain in dB for the loudness check, repeatable (default: --gain -12 --gain 6)")
    p.add_argument("--no-gain-check", action="store_true", help="skip the loudness check")
    p.add_argument("--out", help="folder for report.json, confusion.png (pooled), confusion-NAME.png (each source "
                                 "when several) and curves.png")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("--jobs", type=int, default=0, help="feature-extraction processes (default: all cores)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow threads (default 0: TensorFlow decides)")
    p.add_argument("--backend", default="builtin", help="feature extractor backend: builtin or sonic-annotator")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--keep-predictions", action="store_true", help="keep per-song predictions in the JSON report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shared.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    import os

    from shared.cli.train import dataset_sources, load_sources, set_tf_threads, warn_skipped
    from shared.datapaths import data_location, portable_path, portable_song
    from shared.evaluation import baseline, format_table, plot_confusions, plot_curves, score, song_agreement, song_predictions
    from shared.model import PRETRAINED_INPUT, ModelArtifact, ModelLoadError
    from shared.training import predict_chunks

    args.jobs = args.jobs if args.jobs > 0 else (os.cpu_count() or 1)
    gains = [] if args.no_gain_check else (args.gains if args.gains else list(DEFAULT_GAINS_DB))
    set_tf_threads(args.threads)
    try:
        model = ModelArtifact.load(args.model)
    except ModelLoadError as exc:
        raise CliError(str(exc)) from exc
    sources = dataset_sources(args.tests, args.manifest)
    if args.train and len(args.train) != len(sources):
        raise CliError(f"{len(args.train)} --train for {len(sources)} test folders; give one per test folder, in "
                       "order, or none (each test folder's sibling 'train' is used)", EXIT_USAGE)
    train_roots = [Path(t) for t in args.train] if args.train else [f.parent / "train" for _, f, _ in sources]
    train_sources = [(n, t, m) for (n, _, m), t in zip(sources, train_roots)]

    t0 = time.perf_counter()
    test, _, _, failed = load_sources(args, sources, spec=model.spec, desc="test features")
    warn_skipped(failed)
    if not len(test):
        raise CliError(f"no readable songs under {', '.join(str(f) for _, f, _ in sources)}", 1)
    t1 = time.perf_counter()
    probs = predict_chunks(model, test.features, progress=sys.stderr.isatty())
    predict_s = time.perf_counter() - t1
    report = score(probs, test, model.genres)
    report.update({
        "model": portable_path(args.model),
        "model_version": model.version,
        "arch": model.metadata.get("arch"),
        "test": data_location(sources[0][1]) if len(sources) == 1 else {n: data_location(f) for n, f, _ in sources},
        "skipped_songs": [{"path": portable_song(p), "reason": r} for p, r in failed],
        # a pre-trained model's embeddings may come from the cache: its cost is bench/model.py's
        "inference_ms_per_chunk": None if PRETRAINED_INPUT in model.input_names else round(1000 * predict_s / len(test), 3),
        "device": model.device,
    })
    verdicts0 = song_predictions(probs, test.songs, model.genres)

    report["gain_agreement"] = {}
    scaled_sets = {}
    for g in gains:
        scaled, _, _, _ = load_sources(args, sources, spec=model.spec, gain_db=g, desc=f"test {g:+g} dB")
        scaled_sets[g] = scaled
        p_g = predict_chunks(model, scaled.features, progress=sys.stderr.isatty())
        report["gain_agreement"][f"{g:+g}"] = song_agreement(verdicts0, song_predictions(p_g, scaled.songs, model.genres))
        report.setdefault("gain_song_accuracy", {})[f"{g:+g}"] = score(p_g, scaled, model.genres)["song_accuracy"]

    train = train_groups = None
    if not (args.no_baseline and (args.no_seed or args.seed_model)):
        missing = [str(t) for t in train_roots if not t.is_dir()]
        if missing:
            print(f"warning: no train side at {', '.join(missing)}; baseline and seed are not reported "
                  "(give --train)", file=sys.stderr)
        else:
            train, train_groups, _, _ = load_sources(args, train_sources, spec=model.spec, desc="train features")

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
        plot_confusions(report, out, model.version)
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
    """The report without per-song predictions (also in its per-source parts) unless kept;
    kept ones name their songs by portable paths (the report is committed and read elsewhere)."""
    from shared.datapaths import portable_song

    for r in [report, *report.get("sources", {}).values()]:
        if not keep_predictions:
            r.pop("predictions", None)
        for p in r.get("predictions") or []:
            p["song"] = portable_song(p["song"])
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
