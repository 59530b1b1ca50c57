"""Evaluation: chunk- and song-level accuracy, per-genre scores, a classical baseline,
loudness agreement, plots and the JSON report.

Song-level predictions use the project's vote (shared.vote.song_verdict: the mode of the
chunk votes, ties broken by the summed probabilities, then by genre name), so evaluation
scores exactly what the services emit.

Chunks may come from several sources (datasets: real recordings, MIDI renders); each
report then carries the pooled figures at the top and each source's under "sources".
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shared.featurespec import ChunkFeatures

logger = logging.getLogger(__name__)

BASELINE_DESCRIPTION = (
    "scikit-learn StandardScaler + LogisticRegression(max_iter=5000) on per-chunk mean and std of the "
    "20 MFCCs and the 7+7 spectral-contrast peaks/valleys (68 numbers per chunk), song = vote"
)


def vote(probabilities: np.ndarray, genres: Sequence[str] | None = None) -> int:
    """Index of the song's genre: the mode of chunk votes, ties by summed probability,
    then by genre order (the rule of shared.vote.song_verdict)."""
    p = np.asarray(probabilities, dtype=np.float64)
    names = list(genres) if genres is not None else [f"{i:06d}" for i in range(p.shape[1])]
    from shared.vote import song_verdict

    return names.index(song_verdict(p, names).genre)


@dataclass
class LabelledChunks:
    """Chunks of many songs with their song's genre and id, in song order; `sources`
    (per chunk) names each chunk's dataset when several are pooled."""

    features: list[ChunkFeatures]
    labels: list[str]
    songs: list[str]
    n_samples: list[int] | None = None
    sources: list[str] | None = None

    def __len__(self) -> int:
        return len(self.features)


def select(chunks: LabelledChunks, idx: Sequence[int]) -> LabelledChunks:
    """The chunks at positions `idx`."""
    def pick(xs: list | None) -> list | None:
        return None if xs is None else [xs[i] for i in idx]

    return LabelledChunks(pick(chunks.features), pick(chunks.labels), pick(chunks.songs), pick(chunks.n_samples),
                          pick(chunks.sources))


def concat_chunks(parts: Sequence[LabelledChunks]) -> LabelledChunks:
    """The parts one after the other (n_samples and sources kept when every part has them)."""
    def cat(attr: str) -> list | None:
        lists = [getattr(c, attr) for c in parts]
        return None if any(x is None for x in lists) else [v for x in lists for v in x]

    return LabelledChunks(cat("features") or [], cat("labels") or [], cat("songs") or [], cat("n_samples"), cat("sources"))


def pool_sources(parts: Sequence[tuple[str, LabelledChunks, Sequence[str]]]) -> tuple[LabelledChunks, list[str]]:
    """One chunk set and its per-chunk groups from (name, chunks, groups) of several sources.

    Song and group ids get 'NAME:' in front, so the same file name or artist in two
    sources stays two songs or groups, and each chunk records its source for per-source
    scores. A single source is returned as it is (its ids unchanged)."""
    if len(parts) == 1:
        return parts[0][1], list(parts[0][2])
    names = [n for n, _, _ in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must differ, got {names}")
    pooled = concat_chunks([replace(c, songs=[f"{n}:{s}" for s in c.songs], sources=[n] * len(c)) for n, c, _ in parts])
    return pooled, [f"{n}:{g}" for n, _, groups in parts for g in groups]


def songs_per_source(chunks: LabelledChunks) -> dict[str, int]:
    """Number of songs of each source, in first-seen order (empty for a single source)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for song, src in zip(chunks.songs, chunks.sources or []):
        seen[src].add(song)
    return {src: len(songs) for src, songs in seen.items()}


def chunks_from_results(results: Sequence[Any], genres: Sequence[str], groups: Sequence[str] | None = None) -> tuple[LabelledChunks, list[str]]:
    """Flatten per-song extraction results (feature_cache.SongResult) into chunks;
    returns also the songs' groups per chunk (for training) when `groups` is given."""
    feats, labels, songs, grp, ns = [], [], [], [], []
    for i, (r, g) in enumerate(zip(results, genres)):
        for f, n in zip(r.features, r.n_samples):
            feats.append(f)
            labels.append(g)
            songs.append(r.path)
            ns.append(int(n))
            if groups is not None:
                grp.append(groups[i])
    return LabelledChunks(feats, labels, songs, ns), grp


# --------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------


def song_predictions(probs: np.ndarray, songs: Sequence[str], genres: Sequence[str]) -> dict[str, str]:
    """song id -> voted genre (songs in first-seen order)."""
    idx: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(songs):
        idx[s].append(i)
    return {s: genres[vote(probs[ix], genres)] for s, ix in idx.items()}


def per_genre_scores(truth: Sequence[str], pred: Sequence[str], genres: Sequence[str]) -> dict[str, dict[str, float]]:
    out = {}
    for g in genres:
        tp = sum(1 for t, p in zip(truth, pred) if t == g and p == g)
        fp = sum(1 for t, p in zip(truth, pred) if t != g and p == g)
        fn = sum(1 for t, p in zip(truth, pred) if t == g and p != g)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[g] = {"precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4), "support": tp + fn}
    return out


def confusion(truth: Sequence[str], pred: Sequence[str], genres: Sequence[str]) -> list[list[int]]:
    index = {g: i for i, g in enumerate(genres)}
    m = np.zeros((len(genres), len(genres)), dtype=int)
    for t, p in zip(truth, pred):
        if t in index and p in index:
            m[index[t], index[p]] += 1
    return m.tolist()


def score(probs: np.ndarray, chunks: LabelledChunks, genres: Sequence[str]) -> dict[str, Any]:
    """Chunk and song accuracy, per-genre precision/recall/F1 (song level), confusions;
    with pooled sources also each source's own score under "sources"."""
    genres = list(genres)
    chunk_pred = [genres[i] for i in np.asarray(probs).argmax(axis=1)]
    chunk_acc = float(np.mean([p == t for p, t in zip(chunk_pred, chunks.labels)])) if len(chunks) else 0.0
    song_pred = song_predictions(np.asarray(probs), chunks.songs, genres)
    truth_of = {s: t for s, t in zip(chunks.songs, chunks.labels)}
    songs = list(song_pred)
    truth = [truth_of[s] for s in songs]
    pred = [song_pred[s] for s in songs]
    song_acc = float(np.mean([p == t for p, t in zip(pred, truth)])) if songs else 0.0
    labels_all = sorted(set(genres) | set(truth))
    report = {
        "song_accuracy": round(song_acc, 4),
        "chunk_accuracy": round(chunk_acc, 4),
        "songs": len(songs),
        "chunks": len(chunks),
        "songs_correct": int(sum(p == t for p, t in zip(pred, truth))),
        "per_genre": per_genre_scores(truth, pred, labels_all),
        "per_genre_chunk": per_genre_scores(chunks.labels, chunk_pred, labels_all),
        "confusion": {"labels": labels_all, "matrix": confusion(truth, pred, labels_all)},
        "chunk_confusion": {"labels": labels_all, "matrix": confusion(chunks.labels, chunk_pred, labels_all)},
        "unknown_genres": sorted(set(truth) - set(genres)),
        "predictions": [{"song": s, "truth": t, "predicted": p} for s, t, p in zip(songs, truth, pred)],
    }
    if chunks.sources is not None:
        report["sources"] = score_by_source(probs, chunks, genres)
    return report


def score_by_source(probs: np.ndarray, chunks: LabelledChunks, genres: Sequence[str]) -> dict[str, dict[str, Any]]:
    """score() of each source's chunks alone, sources in first-seen order."""
    probs = np.asarray(probs)
    at: dict[str, list[int]] = defaultdict(list)
    for i, src in enumerate(chunks.sources or []):
        at[src].append(i)
    return {src: score(probs[idx], replace(select(chunks, idx), sources=None), genres) for src, idx in at.items()}


def song_agreement(a: Mapping[str, str], b: Mapping[str, str]) -> float:
    common = [s for s in a if s in b]
    return round(float(np.mean([a[s] == b[s] for s in common])), 4) if common else 0.0


# --------------------------------------------------------------------------------------
# Classical baseline
# --------------------------------------------------------------------------------------


def summary_vector(f: ChunkFeatures) -> np.ndarray:
    """Mean and std over time of MFCC, peaks and valleys: 68 numbers."""
    parts = []
    for a in (f.mfcc, f.peaks, f.valleys):
        a = np.asarray(a, dtype=np.float64)
        parts += [a.mean(axis=0), a.std(axis=0)]
    return np.concatenate(parts)


def baseline(train: LabelledChunks, test: LabelledChunks, seed: int = 0) -> dict[str, Any]:
    """Fit the classical baseline on train chunks; score it on test like the network."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    genres = sorted(set(train.labels))
    y = np.array([genres.index(g) for g in train.labels])
    x_tr = np.stack([summary_vector(f) for f in train.features])
    x_te = np.stack([summary_vector(f) for f in test.features])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    clf.fit(x_tr, y)
    probs = np.zeros((len(test), len(genres)))
    probs[:, clf.classes_] = clf.predict_proba(x_te)
    rep = score(probs, test, genres)
    rep["description"] = BASELINE_DESCRIPTION
    rep["train_chunks"] = len(train)
    return rep


# --------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str) -> Path:
    plt = _pyplot()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(labels), 0.8 + 0.6 * len(labels)), dpi=100)
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    top = m.max() if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > top / 2 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_confusions(report: Mapping[str, Any], out: Path, title: str) -> list[Path]:
    """confusion.png of the (pooled) song scores and confusion-NAME.png of each source's."""
    paths = []
    for name, r in [("", report), *(report.get("sources") or {}).items()]:
        path = out / (f"confusion-{name}.png" if name else "confusion.png")
        paths.append(plot_confusion(
            r["confusion"]["matrix"], r["confusion"]["labels"], path,
            f"{title}{f' on {name}' if name else ''}: song accuracy {r['song_accuracy']:.3f} ({r['songs']} songs)"))
    return paths


def plot_curves(history: Mapping[str, Sequence[float]], path: str | Path, title: str, best_epoch: int | None = None) -> Path:
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for key, ax in (("loss", a1), ("accuracy", a2)):
        for prefix, style in (("", "-"), ("val_", "--")):
            vals = history.get(prefix + key)
            if vals:
                ax.plot(range(1, len(vals) + 1), vals, style, label=("validation " if prefix else "train ") + key)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", lw=0.8, ls=":", label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------


def source_rows(name: str, report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(label, scores) of a model's pooled line and, indented under it, each source's."""
    return [(name, report)] + [(f"  {src}", r) for src, r in (report.get("sources") or {}).items()]


def format_table(report: Mapping[str, Any]) -> str:
    head = f"model {report.get('model_version', '?')}  ({report.get('songs', 0)} songs, {report.get('chunks', 0)} chunks"
    if report.get("sources"):
        head += "; " + ", ".join(f"{src} {r['songs']}" for src, r in report["sources"].items())
    lines = [head + ")", f"{'':<22}{'song acc':>9}{'chunk acc':>11}"]
    rows = [("model", report)]
    for key in ("seed", "baseline"):
        if isinstance(report.get(key), Mapping):
            rows.append((key, report[key]))
    for name, r in [row for name, r in rows for row in source_rows(name, r)]:
        lines.append(f"{name:<22}{r['song_accuracy']:>9.3f}{r['chunk_accuracy']:>11.3f}")
    for name, r in rows:
        ga = r.get("gain_agreement")
        if ga:
            lines.append(f"gain agreement of {name} (song verdicts vs 0 dB): "
                         + ", ".join(f"{k} dB: {v:.3f}" for k, v in ga.items()))
    lines.append("")
    lines.append(f"{'genre':<14}{'precision':>10}{'recall':>8}{'f1':>7}{'songs':>7}")
    for g, s in report["per_genre"].items():
        lines.append(f"{g:<14}{s['precision']:>10.3f}{s['recall']:>8.3f}{s['f1']:>7.3f}{s['support']:>7}")
    return "\n".join(lines)
