"""How well can genre be told from the MIDI files themselves?

The audio model sees only what fluidsynth renders of each MIDI file, through 20 MFCCs and
7 contrast bands. The files state their instrumentation, drums, tempo, notes and timing
exactly, so classifiers on descriptors read from them bound what any audio model trained on
the same songs can be expected to reach. This measures that bound on a manifest split
(`path,genre,artist,...,split`, as in ../shared/data): train on `train`, song accuracy on
`test`, the first `--seconds` of each file (the audio protocol's 90 s); with `--cv K`, also
K-fold cross-validation over all songs with folds disjoint by artist (less noisy than one
small test split).

    python tools/symbolic_ceiling.py ../shared/data/manifest.csv [--cv 5] [--json]

Needs pretty_midi (`pip install -e .[test]`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

SEEDS = (0, 1, 2)
DRUM_NOTES = slice(35, 60)  # General MIDI percussion keys that kits use


@contextlib.contextmanager
def _lenient_key_signatures() -> Iterator[None]:
    """mido refuses key signatures with an invalid mode byte, which some fan-made files
    have; the key signature is not used here, so read them as C major meanwhile."""
    import mido.midifiles.meta as meta

    original = meta._key_signature_decode

    class _Lenient(dict):
        def __missing__(self, key: object) -> str:
            return "C"

    meta._key_signature_decode = _Lenient(original)
    try:
        yield
    finally:
        meta._key_signature_decode = original


def load_midi(path: str | Path):
    """pretty_midi.PrettyMIDI, tolerating out-of-range data bytes and bad key signatures."""
    import mido
    import pretty_midi

    with warnings.catch_warnings(), _lenient_key_signatures():
        warnings.simplefilter("ignore")
        midi = mido.MidiFile(str(path), clip=True)
        buf = io.BytesIO()
        midi.save(file=buf)
        buf.seek(0)
        return pretty_midi.PrettyMIDI(buf)


def instrumentation(pm, seconds: float) -> np.ndarray:
    """What plays: General MIDI program families by note share, drum share and kit
    pieces, tempo, density, register and dynamics (45 numbers)."""
    family = np.zeros(16)
    drums = np.zeros(128)
    pitches, velocities, durations, voices = [], [], [], 0
    for inst in pm.instruments:
        notes = [n for n in inst.notes if n.start < seconds]
        velocities += [n.velocity for n in notes]
        if inst.is_drum:
            for n in notes:
                drums[n.pitch] += 1
            continue
        voices += bool(notes)
        family[inst.program // 8] += len(notes)
        pitches += [n.pitch for n in notes]
        durations += [n.end - n.start for n in notes]
    pitched, hits = family.sum(), drums.sum()
    tempi = pm.get_tempo_changes()[1]
    return np.concatenate([
        family / max(pitched, 1),
        drums[DRUM_NOTES] / max(hits, 1),
        [hits / max(pitched + hits, 1), float(hits > 0), tempi[0] if len(tempi) else 120.0,
         np.log1p(pitched + hits), voices,
         np.mean(pitches) if pitches else 0.0, np.std(pitches) if pitches else 0.0,
         np.mean(velocities) if velocities else 0.0, np.median(durations) if durations else 0.0],
    ])


def harmony_rhythm(pm, seconds: float) -> np.ndarray:
    """How it is played: key-rotated pitch-class profile, intervals sounding together,
    onset spacing in beats and onset position within the beat (swing), polyphony (46)."""
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes if n.start < seconds]
    classes = np.zeros(12)
    for n in notes:
        classes[n.pitch % 12] += min(n.end, seconds) - n.start
    classes /= max(classes.sum(), 1e-9)
    classes = np.roll(classes, -int(np.argmax(classes)))
    intervals, polyphony = np.zeros(12), []
    for t in np.arange(0.0, min(seconds, pm.get_end_time()), 0.25):
        sounding = sorted({n.pitch for n in notes if n.start <= t < n.end})
        polyphony.append(len(sounding))
        for i, low in enumerate(sounding):
            for high in sounding[i + 1:]:
                intervals[(high - low) % 12] += 1
    intervals /= max(intervals.sum(), 1)
    onsets = np.unique(np.round([n.start for n in notes], 3)) if notes else np.zeros(1)
    tempi = pm.get_tempo_changes()[1]
    beat = 60.0 / (tempi[0] if len(tempi) else 120.0)
    spacing = np.histogram(np.clip(np.diff(onsets) / beat, 0, 2), bins=8, range=(0, 2))[0]
    beats = pm.get_beats()
    k = np.searchsorted(beats, onsets, side="right") - 1
    inside = (k >= 0) & (k < len(beats) - 1)
    phase = (onsets[inside] - beats[k[inside]]) / np.diff(beats)[k[inside]] if len(beats) > 1 else np.zeros(0)
    swing = np.histogram(phase, bins=12, range=(0, 1))[0]
    return np.concatenate([
        classes, intervals,
        spacing / max(spacing.sum(), 1), swing / max(swing.sum(), 1),
        [np.mean(polyphony) if polyphony else 0.0, max(polyphony, default=0)],
    ])


def describe(path: str | Path, seconds: float) -> dict[str, np.ndarray]:
    pm = load_midi(path)
    return {"instrumentation": instrumentation(pm, seconds), "harmony_rhythm": harmony_rhythm(pm, seconds)}


def classifiers(seed: int) -> dict:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000)),
        "extra_trees": ExtraTreesClassifier(500, random_state=seed),
        "random_forest": RandomForestClassifier(500, random_state=seed),
    }


GROUPS = {
    "instrumentation": ("instrumentation",),
    "harmony_rhythm": ("harmony_rhythm",),
    "all": ("instrumentation", "harmony_rhythm"),
}


def _matrix(described: list[dict[str, np.ndarray]], parts: tuple[str, ...]) -> np.ndarray:
    return np.stack([np.concatenate([d[p] for p in parts]) for d in described])


def ceiling(manifest: str | Path, seconds: float = 90.0, cv: int = 0) -> dict:
    """Song accuracy per descriptor group and classifier, one figure per seed: on the test
    split, and (cv > 1) over artist-disjoint folds of all songs."""
    from shared.crossval import group_folds

    manifest = Path(manifest)
    rows = [r for r in csv.DictReader(manifest.open(newline="")) if r.get("split") in ("train", "test")]
    sides = np.array([r["split"] for r in rows])
    if not {"train", "test"} <= set(sides):
        raise SystemExit(f"{manifest} needs rows with split 'train' and 'test'")
    described = [describe(manifest.parent / r["path"], seconds) for r in rows]
    genres = np.array([r["genre"] for r in rows])
    artists = np.array([r.get("artist") or r["path"] for r in rows])
    train, test = sides == "train", sides == "test"
    report: dict = {"train_songs": int(train.sum()), "test_songs": int(test.sum()), "chance": 1 / len(set(genres[train])),
                    "seconds": seconds, "song_accuracy": {}, "cv_folds": cv, "cv_song_accuracy": {}}
    folds = {seed: group_folds(genres, artists, cv, seed) for seed in SEEDS} if cv > 1 else {}
    for group, parts in GROUPS.items():
        x = _matrix(described, parts)
        for name in classifiers(0):
            key = f"{group}/{name}"
            report["song_accuracy"][key] = [
                round(float(np.mean(classifiers(seed)[name].fit(x[train], genres[train]).predict(x[test]) == genres[test])), 3)
                for seed in SEEDS
            ]
            if cv > 1:
                accs = []
                for seed in SEEDS:
                    right = 0
                    for k in range(cv):
                        a, b = folds[seed] != k, folds[seed] == k
                        right += int(np.sum(classifiers(seed)[name].fit(x[a], genres[a]).predict(x[b]) == genres[b]))
                    accs.append(round(right / len(genres), 3))
                report["cv_song_accuracy"][key] = accs
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", help="CSV with path, genre, split columns (paths relative to it)")
    ap.add_argument("--seconds", type=float, default=90.0, help="describe the first SECONDS of each file (default 90)")
    ap.add_argument("--cv", type=int, default=0, metavar="K", help="also K-fold cross-validation over all songs, folds disjoint by artist")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    report = ceiling(args.manifest, args.seconds, args.cv)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['train_songs']} train / {report['test_songs']} test songs, first {args.seconds:g} s, chance {report['chance']:.3f}")
    seeds = ", ".join(map(str, SEEDS))
    cv_head = f"   {args.cv}-fold by artist, all songs" if args.cv > 1 else ""
    print(f"{'descriptors/classifier':38} test split (seeds {seeds}){cv_head}")
    for key, accs in report["song_accuracy"].items():
        cv_accs = report["cv_song_accuracy"].get(key, [])
        print(f"{key:38} {'  '.join(f'{a:.3f}' for a in accs)}      {'  '.join(f'{a:.3f}' for a in cv_accs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
