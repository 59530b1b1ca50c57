"""Cross-validation with folds disjoint by artist (or song).

One test split of a small dataset is noisy: with 76 songs one song is 1.3 points and the
standard error of an accuracy ~5.5 points. Repeating `genre train` and `genre evaluate`
over K folds of all songs scores every song once, with models that never saw its artist,
so architecture comparisons rest on the whole dataset. Training and scoring are the very
functions `genre train` and `genre evaluate` run. With pooled sources (chunks.sources) the
report gives each source's pooled-over-folds figures beside the overall ones.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from shared.evaluation import LabelledChunks, baseline, confusion, score, select, source_rows

BASELINE = "baseline"


class CrossValidationError(ValueError):
    """The data cannot be split as asked (too few groups, one genre)."""


def group_folds(genres: Sequence[str], groups: Sequence[str], k: int, seed: int = 0) -> np.ndarray:
    """Fold number (0..k-1) of each song: every group (artist) in one fold, each genre's
    songs spread over the folds as evenly as whole groups allow; deterministic for `seed`."""
    from sklearn.model_selection import StratifiedGroupKFold

    genres, groups = np.asarray(genres), np.asarray(groups)
    n_groups = len(set(groups))
    if k < 2:
        raise CrossValidationError(f"need at least 2 folds, got {k}")
    if len(set(genres)) < 2:
        raise CrossValidationError(f"need at least two genres, found {sorted({str(g) for g in genres})}")
    if n_groups < k:
        hint = f"use --folds {n_groups} or fewer" if n_groups >= 2 else "add songs by other artists"
        raise CrossValidationError(f"{n_groups} groups cannot fill {k} folds; {hint}")
    fold = np.full(len(genres), -1)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, test) in enumerate(splitter.split(np.zeros(len(genres)), genres, groups)):
        fold[test] = i
    return fold


def chunk_folds(songs: Sequence[str], genres: Sequence[str], groups: Sequence[str], k: int, seed: int = 0) -> np.ndarray:
    """Fold of each chunk (per-chunk song, genre and group): its song's fold by group_folds."""
    song_ids = list(dict.fromkeys(songs))
    first = {s: i for i, s in reversed(list(enumerate(songs)))}
    fold = group_folds([genres[first[s]] for s in song_ids], [groups[first[s]] for s in song_ids], k, seed)
    fold_of_song = dict(zip(song_ids, fold.tolist()))
    return np.array([fold_of_song[s] for s in songs])


def chunk_positions(songs: Sequence[str]) -> np.ndarray:
    """Position of each chunk within its song (chunks of a song are consecutive)."""
    pos = np.zeros(len(songs), dtype=int)
    for i in range(1, len(songs)):
        pos[i] = pos[i - 1] + 1 if songs[i] == songs[i - 1] else 0
    return pos


def _subset(chunks: LabelledChunks, mask: np.ndarray) -> LabelledChunks:
    return select(chunks, np.flatnonzero(mask).tolist())


def _new_tally() -> dict[str, Any]:
    return {"chunks": 0, "chunks_correct": 0, "truth": [], "predicted": []}


def _add(tally: dict[str, Any], rep: Mapping[str, Any]) -> None:
    """Add one fold's score() to a model's (or a source's) tally over the folds."""
    tally["chunks"] += rep["chunks"]
    tally["chunks_correct"] += int(round(rep["chunk_accuracy"] * rep["chunks"]))
    tally["truth"] += [p["truth"] for p in rep["predictions"]]
    tally["predicted"] += [p["predicted"] for p in rep["predictions"]]


def _summary(tally: Mapping[str, Any]) -> dict[str, Any]:
    """Song and chunk accuracy and the song confusion of a tally."""
    truth, pred = tally["truth"], tally["predicted"]
    correct = sum(t == p for t, p in zip(truth, pred))
    labels = sorted(set(truth) | set(pred))
    return {
        "song_accuracy": round(correct / max(len(truth), 1), 4),
        "chunk_accuracy": round(tally["chunks_correct"] / max(tally["chunks"], 1), 4),
        "songs": len(truth),
        "songs_correct": correct,
        "confusion": {"labels": labels, "matrix": confusion(truth, pred, labels)},
    }


def cross_validate(
    chunks: LabelledChunks,
    groups: Sequence[str],
    *,
    folds: int = 5,
    archs: Sequence[str] = ("default",),
    with_baseline: bool = True,
    test_chunks: int | None = None,
    seed: int = 0,
    train: Callable[..., Any] | None = None,
    train_kwargs: Mapping[str, Any] | None = None,
    on_fold: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:
    """Train each arch (and the baseline) on K-1 folds, score the held-out fold's songs
    on their first `test_chunks` chunks (all when None); pooled and per-fold figures.

    `groups` (per chunk) decide the folds and, inside each training side, the early-
    stopping validation split, exactly as in `genre train`."""
    from shared.model import arch_spec
    from shared.training import predict_chunks

    if train is None:
        from shared.training import train_model as train
    chunk_fold = chunk_folds(chunks.songs, chunks.labels, groups, folds, seed)
    held_out = chunk_positions(chunks.songs) < (test_chunks if test_chunks else np.inf)
    names = list(archs) + ([BASELINE] if with_baseline else [])
    per_fold: list[dict[str, Any]] = []
    pooled = {n: _new_tally() for n in names}
    by_source: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in names}
    t0 = time.perf_counter()
    for k in range(folds):
        tr_mask = chunk_fold != k
        train_side = _subset(chunks, tr_mask)
        test_side = _subset(chunks, (chunk_fold == k) & held_out)
        tr_groups = [g for g, m in zip(groups, tr_mask) if m]
        row: dict[str, Any] = {"fold": k, "songs": len(set(test_side.songs)), "train_songs": len(set(train_side.songs)),
                               "groups": len({g for g, f in zip(groups, chunk_fold) if f == k}), "song_accuracy": {}}
        for name in names:
            t1 = time.perf_counter()
            if name == BASELINE:
                rep = baseline(train_side, test_side, seed=seed)
            else:
                artifact = train(train_side.features, train_side.labels, tr_groups, arch=name, seed=seed,
                                 songs=train_side.songs, n_samples=train_side.n_samples, spec=arch_spec(name),
                                 sources=train_side.sources, **dict(train_kwargs or {}))
                rep = score(predict_chunks(artifact, test_side.features), test_side, artifact.genres)
            row["song_accuracy"][name] = rep["song_accuracy"]
            row.setdefault("seconds", {})[name] = round(time.perf_counter() - t1, 1)
            _add(pooled[name], rep)
            for src, r in rep.get("sources", {}).items():
                _add(by_source[name].setdefault(src, _new_tally()), r)
        per_fold.append(row)
        if on_fold is not None:
            on_fold(k, row)
    return _report(per_fold, pooled, by_source, names, folds, seed, test_chunks, time.perf_counter() - t0)


def _report(per_fold: list[dict], pooled: dict, by_source: dict, names: list[str], folds: int, seed: int,
            test_chunks: int | None, seconds: float) -> dict[str, Any]:
    models = {}
    for name in names:
        per = [row["song_accuracy"][name] for row in per_fold]
        models[name] = _summary(pooled[name]) | {
            "fold_song_accuracy": per,
            "fold_mean": round(float(np.mean(per)), 4),
            "fold_std": round(float(np.std(per, ddof=1)) if len(per) > 1 else 0.0, 4),
        }
        if by_source[name]:
            models[name]["sources"] = {src: _summary(t) for src, t in by_source[name].items()}
    gains = {}
    primary = names[0]
    for other in names[1:]:
        diff = [row["song_accuracy"][primary] - row["song_accuracy"][other] for row in per_fold]
        gains[f"{primary}-{other}"] = {
            "song_accuracy": round(models[primary]["song_accuracy"] - models[other]["song_accuracy"], 4),
            "fold_differences": [round(d, 4) for d in diff],
            "folds_better": int(sum(d > 0 for d in diff)),
            "standard_error": round(float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0, 4),
        }
    return {"folds": folds, "seed": seed, "test_chunks": test_chunks, "models": models, "gains": gains,
            "per_fold": per_fold, "seconds": round(seconds, 1)}


def format_crossval(report: Mapping[str, Any]) -> str:
    models = report["models"]
    first = next(iter(models.values()))
    head = f"{report['folds']}-fold cross-validation, folds disjoint by group: {first['songs']} songs"
    if report.get("test_chunks"):
        head += f", scored on each song's first {report['test_chunks']} chunks"
    lines = [head, f"{'model':<14}{'song acc':>9}{'chunk acc':>11}   per fold (song acc)"]
    for name, m in models.items():
        for label, r in source_rows(name, m):
            per = " ".join(f"{a:.3f}" for a in r["fold_song_accuracy"]) if "fold_song_accuracy" in r else f"({r['songs']} songs)"
            lines.append(f"{label:<14}{r['song_accuracy']:>9.3f}{r['chunk_accuracy']:>11.3f}   {per}")
    for key, g in report["gains"].items():
        lines.append(f"{key}: {g['song_accuracy']:+.3f} song accuracy (better in {g['folds_better']} of "
                     f"{report['folds']} folds, standard error of the fold differences {g['standard_error']:.3f})")
    return "\n".join(lines)
