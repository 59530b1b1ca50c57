"""How much does knowledge from outside the dataset add? Classical classifiers on musicnn embeddings.

`tools/symbolic_ceiling.py` bounds what a model *trained on these songs alone* can reach.
A network pre-trained on other music escapes that bound: it brings what it learnt from
hundreds of thousands of real recordings. This measures how far, with the musicnn
taggers (Pons & Serra 2019; MagnaTagATune and Million Song Dataset models, ISC licence):
each 30-s chunk is cut into ten 3-s patches, each patch goes through the frozen network,
and a chunk is described by the mean and standard deviation over its patches of the
penultimate layer (200) and the tag probabilities (50) of each model. Classical
classifiers on those vectors are trained on DATASET/train and scored on DATASET/test by
song (mode vote over chunks, as `genre evaluate` does), and with `--cv K` by K-fold
cross-validation over all songs, folds disjoint by artist (as `genre crossval`).

    python tools/pretrained_probe.py DATASET [--manifest CSV] [--test-chunks 3] [--cv 5] [--json]

The network is shared/musicnn.py's: musicnn rebuilt from standard Keras layers, with the
weights read straight from the checkpoints that the `musicnn` wheel ships (`pip install
--no-deps musicnn==0.1.0`; its TF1 code and its numpy<1.17 pin are never used), the same
frozen network the `pretrained` architecture carries. Each chunk is scaled to a fixed RMS
first, so the probe cannot learn loudness. Embeddings are cached per file (npz, keyed by
content hash) under $XDG_CACHE_HOME/genre/probe (~/.cache/genre/probe).

musicnn's architecture and weights: Copyright (c) Music Technology Group, Universitat
Pompeu Fabra 2019, code by Jordi Pons, ISC licence (https://github.com/jordipons/musicnn).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# musicnn's input (16 kHz, 512-point STFT, hop 256, 96 Slaney mel bands, each chunk scaled
# to a fixed RMS first), computed by the same code as the extractor's, classify's and training's.
from shared.datapaths import data_location, portable_path  # noqa: E402
from shared.logmel import MEL_BANDS as N_MELS  # noqa: E402
from shared.logmel import MEL_SAMPLE_RATE as SAMPLE_RATE  # noqa: E402
from shared.logmel import log_mel_16k as log_mel  # noqa: E402,F401 - (frames, 96) of 16-kHz audio
from shared.logmel import log_mel_chunk  # noqa: E402
from shared.musicnn import NETWORKS as MODELS  # noqa: E402
from shared.musicnn import PATCH_FRAMES, PATCHES_PER_CHUNK, PENULTIMATE, TAGS, WeightsError  # noqa: E402

CHUNK_SECONDS = 30.0
SEEDS = (0, 1, 2)
CACHE_VERSION = 1  # bump when the chunk description changes


class ProbeError(RuntimeError):
    """Something the user must fix (missing weights, no songs)."""


def load_networks(models: Sequence[str] = MODELS, folder: Path | None = None) -> list[Any]:
    """The frozen patch networks (keras.Model: (187, 96) -> penultimate 200 + tags 50), one
    per model, from the wheel's checkpoints (or `folder`)."""
    from shared.musicnn import build_patch_network, read_checkpoint

    try:
        return [build_patch_network(m, read_checkpoint(m, folder)) for m in models]
    except WeightsError as exc:
        raise ProbeError(str(exc)) from exc


_COMPILED: dict[int, tuple[Any, Any]] = {}  # id(network) -> (network, its traced call)


def patch_outputs(net: Any, patches: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(n, 250) penultimate layer then tag probabilities of (n, 187, 96) log-mel patches."""
    import tensorflow as tf

    entry = _COMPILED.get(id(net))
    if entry is None or entry[0] is not net:
        fn = tf.function(lambda x: net(x, training=False),
                         input_signature=[tf.TensorSpec([None, PATCH_FRAMES, N_MELS], tf.float32)])
        entry = _COMPILED[id(net)] = (net, fn)
    fn = entry[1]
    flat = np.asarray(patches, np.float32).reshape(-1, PATCH_FRAMES, N_MELS)
    outs = [np.asarray(fn(tf.constant(flat[b : b + batch_size]))) for b in range(0, len(flat), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, PENULTIMATE + TAGS), np.float32)


def chunk_patches(pcm: np.ndarray, max_chunks: int | None = None) -> np.ndarray:
    """(chunks, 10, 187, 96): whole 30-s chunks (a shorter tail is dropped), each scaled to
    a fixed RMS before its spectrogram so that gain cannot change the description."""
    size = int(CHUNK_SECONDS * SAMPLE_RATE)
    n = len(pcm) // size if max_chunks is None else min(max_chunks, len(pcm) // size)
    out = np.zeros((n, PATCHES_PER_CHUNK, PATCH_FRAMES, N_MELS), np.float32)
    for c in range(n):
        mel = log_mel_chunk(pcm[c * size : (c + 1) * size], SAMPLE_RATE)
        out[c] = mel[: PATCHES_PER_CHUNK * PATCH_FRAMES].reshape(PATCHES_PER_CHUNK, PATCH_FRAMES, N_MELS)
    return out


def describe_chunks(patches: np.ndarray, nets: Sequence[Any]) -> np.ndarray:
    """(chunks, 500 per model): mean and std over each chunk's patches of penultimate and tags."""
    n = len(patches)
    if n == 0:
        return np.zeros((0, 2 * (PENULTIMATE + TAGS) * len(nets)), np.float32)  # mean, std of pen + tags
    parts = []
    for net in nets:
        out = patch_outputs(net, patches).reshape(n, PATCHES_PER_CHUNK, PENULTIMATE + TAGS)
        for a in (out[..., :PENULTIMATE], out[..., PENULTIMATE:]):
            parts += [a.mean(1), a.std(1)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def song_vectors(path: Path, nets: Sequence[Any], cache: Path | None) -> np.ndarray:
    from shared.audio import DecodeError, decode_file
    from shared.feature_cache import file_sha256

    digest = file_sha256(path)[:32]
    cached = cache / f"{digest}-{'+'.join(MODELS)}-v{CACHE_VERSION}.npz" if cache else None
    if cached is not None and cached.is_file():
        with np.load(cached, allow_pickle=False) as d:
            return d["x"]
    try:
        pcm, _ = decode_file(path, SAMPLE_RATE)
    except DecodeError as exc:
        raise ProbeError(f"cannot decode {path}: {exc}") from exc
    x = describe_chunks(chunk_patches(pcm), nets)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez(tmp, x=x)
        os.replace(tmp, cached)
    return x


def classifiers() -> dict[str, Any]:
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return {
        "logistic regression": lambda seed: make_pipeline(
            StandardScaler(), LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced")
        ),
        "SVM (RBF)": lambda seed: make_pipeline(StandardScaler(), SVC(C=1.0, class_weight="balanced")),
        "extra trees": lambda seed: ExtraTreesClassifier(
            500, class_weight="balanced", random_state=seed, n_jobs=max(1, min(2, os.cpu_count() or 1))
        ),
    }


def song_accuracy(make: Any, seed: int, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, s_te: np.ndarray) -> float:
    from shared.evaluation import song_predictions

    clf = make(seed).fit(x_tr, y_tr)
    genres = [str(g) for g in clf.classes_]
    if hasattr(clf, "predict_proba"):
        probs = clf.predict_proba(x_te)
    else:  # an SVM's votes, one per chunk
        probs = (clf.predict(x_te)[:, None] == clf.classes_[None, :]).astype(float)
    verdicts = song_predictions(probs, list(s_te), genres)
    truth = {s: y for s, y in zip(s_te, y_te)}
    return float(np.mean([verdicts[s] == truth[s] for s in verdicts]))


def probe(dataset: Path, manifest: Path | None, test_chunks: int, cv: int, cache: Path | None, progress: bool) -> dict[str, Any]:
    from shared.crossval import chunk_folds, chunk_positions
    from shared.dataset import DatasetError, load_labelled_songs

    if not all((dataset / side).is_dir() for side in ("train", "test")):
        raise ProbeError(f"{dataset} needs train/<genre>/ and test/<genre>/ folders with audio (genre dataset split makes them)")
    try:
        sides = {side: load_labelled_songs(dataset / side, manifest=manifest) for side in ("train", "test")}
    except DatasetError as exc:
        raise ProbeError(str(exc)) from exc
    if not sides["train"] or not sides["test"]:
        raise ProbeError(f"{dataset} needs train/<genre>/ and test/<genre>/ folders with audio")
    nets = load_networks(MODELS)
    rows: dict[str, list] = {k: [] for k in ("x", "genre", "song", "group", "side")}
    too_short: list[str] = []
    todo = [(side, item) for side in ("train", "test") for item in sides[side]]
    for i, (side, (path, genre, group)) in enumerate(todo):
        x = song_vectors(path, nets, cache)
        if not len(x):
            too_short.append(portable_path(path))
        if progress:
            print(f"\r  embedding {i + 1}/{len(todo)}", end="", file=sys.stderr, flush=True)
        for row in x:
            rows["x"].append(row)
            rows["genre"].append(genre)
            rows["song"].append(f"{side}/{genre}/{path.name}")
            rows["group"].append(group)
            rows["side"].append(side)
    if progress:
        print(file=sys.stderr)
    x, y, song, group, side = (np.asarray(rows[k]) for k in ("x", "genre", "song", "group", "side"))
    scored = chunk_positions(list(song)) < test_chunks
    tr, te = side == "train", (side == "test") & scored
    report: dict[str, Any] = {
        "dataset": data_location(dataset),
        "models": list(MODELS),
        "features_per_chunk": int(x.shape[1]),
        "train_songs": len(sides["train"]),
        "test_songs": len(sides["test"]),
        "test_chunks": test_chunks,
        "too_short": too_short,  # no whole 30-s chunk: not scored
        "seeds": list(SEEDS),
        "test": {},
        "cv": {},
    }
    for name, make in classifiers().items():
        report["test"][name] = [song_accuracy(make, s, x[tr], y[tr], x[te], y[te], song[te]) for s in SEEDS]
    if cv:
        n_songs = len(set(song))
        fold = chunk_folds(list(song), list(y), list(group), cv)
        for name, make in classifiers().items():
            accs = []
            for seed in SEEDS:
                correct = 0
                for k in range(cv):
                    m_tr, m_te = fold != k, (fold == k) & scored
                    acc = song_accuracy(make, seed, x[m_tr], y[m_tr], x[m_te], y[m_te], song[m_te])
                    correct += acc * len(set(song[m_te]))
                accs.append(correct / n_songs)
            report["cv"][name] = accs
    return report


def format_report(r: dict[str, Any]) -> str:
    def span(v: Sequence[float]) -> str:
        return f"{min(v):.3f}" if max(v) - min(v) < 5e-4 else f"{min(v):.3f}-{max(v):.3f}"

    lines = [
        f"musicnn probe ({' + '.join(r['models'])}, {r['features_per_chunk']} numbers per chunk); "
        f"{r['train_songs']} train songs, {r['test_songs']} test songs on their first {r['test_chunks']} chunks",
        f"{'classifier':<22}{'test split':>12}{'  CV by artist' if r['cv'] else ''}",
    ]
    for name, accs in r["test"].items():
        cv = f"{span(r['cv'][name]):>14}" if r["cv"] else ""
        lines.append(f"{name:<22}{span(accs):>12}{cv}")
    lines.append(f"song accuracy over seeds {', '.join(map(str, r['seeds']))}")
    if r["too_short"]:
        lines.append(f"not scored, shorter than one 30-s chunk: {len(r['too_short'])} songs")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path, help="folder with train/<genre>/ and test/<genre>/ audio")
    ap.add_argument("--manifest", type=Path, help="CSV (path, artist) naming each file's artist for the CV folds")
    ap.add_argument("--test-chunks", type=int, default=3, help="score held-out songs on their first N 30-s chunks (default 3: the 90-s protocol)")
    ap.add_argument("--cv", type=int, default=0, metavar="K", help="also K-fold cross-validation by artist over all songs")
    default_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genre" / "probe"
    ap.add_argument("--cache", type=Path, default=default_cache, help=f"embedding cache folder (default {default_cache})")
    ap.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    if args.test_chunks < 1 or args.cv == 1 or args.cv < 0:
        ap.error("--test-chunks must be 1 or more and --cv 0 (off) or 2 or more")
    from shared.crossval import CrossValidationError

    try:
        report = probe(args.dataset, args.manifest, args.test_chunks, args.cv, None if args.no_cache else args.cache,
                       progress=sys.stderr.isatty())
    except (ProbeError, CrossValidationError) as exc:
        print(f"pretrained_probe: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
