"""Labelled song collections: discover them in the usual layouts, split them, load them.

Layouts `discover` accepts (checked in this order):

- a manifest CSV (``--manifest``) with columns ``path,genre[,artist][,split]``; relative
  paths are taken from the CSV's folder, then from SRC;
- the ancestor's layout ``SRC/{train,test}/<genre>/*`` (both sides pooled and re-split);
- GTZAN's ``SRC/genres/<genre>/<genre>.NNNNN.au`` (also when SRC is the genres folder);
- a flat ``SRC/<genre>/*`` tree.

Only files with an audio extension are taken; hidden files are skipped. The artist of a
file comes from the manifest; without one, ``group_by="artist"`` uses the part of the
file name before the first ``-`` (the ``artist-title`` convention of our dataset and
many collections), and reports files that do not follow it.

A manifest with a ``split`` column (train or test on every row) is split exactly as it
says (a published, artist-disjoint split stays comparable); otherwise `split_items` decides.
`split_items` is deterministic (a keyed SHA-256 orders the groups; no RNG state, no
listing order), stratified per genre (each genre contributes about `test_fraction` of
its songs to test), and group-aware (an artist's or song's files all go to one side).
`write_split` links (hard link, else symlink) or copies the files into
``DEST/{train,test}/<genre>/`` and writes ``DEST/split.csv`` (path, genre, artist,
split, source) which `load_labelled_songs` reads back for artist groups.

Several datasets can be used together (`parse_sources`: ``NAME=PATH`` or ``PATH``); the
name keeps their song and group ids apart and labels their separate scores.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from shared.datapaths import portable_path

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".au", ".snd", ".aif", ".aiff",
     ".wma", ".mp4", ".webm", ".mka", ".caf", ".wv", ".ape"}
)
SIDES = ("train", "test")
SPLIT_MANIFEST = "split.csv"
GROUP_BY = ("artist", "song")


class DatasetError(Exception):
    """The source cannot be used as a dataset; the message says why."""


@dataclass(frozen=True)
class Item:
    path: Path
    genre: str
    artist: str = ""
    split: str = ""  # train or test when the manifest says so

    @property
    def song(self) -> str:
        return str(self.path)


@dataclass
class SplitReport:
    layout: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # genre -> {train, test}
    groups: dict[str, dict[str, int]] = field(default_factory=dict)  # genre -> {train, test} groups
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    ignored: list[str] = field(default_factory=list)  # non-audio files
    empty_genres: list[str] = field(default_factory=list)
    split_from: str = "seed"  # "manifest" when its split column decided the sides
    one_sided: dict[str, str] = field(default_factory=dict)  # genre -> side it is missing from
    warnings: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Human-readable lines for everything a user should look at."""
        out = []
        for g in self.empty_genres:
            out.append(f"genre {g!r} has no audio files; it is left out")
        for g, side in sorted(self.one_sided.items()):
            out.append(f"genre {g!r} has no {side} songs (too few songs or groups to split)")
        for p, why in self.unreadable:
            out.append(f"unreadable, left out: {p}: {why}")
        out.extend(self.warnings)
        return out

    def table(self) -> str:
        lines = [f"{'genre':<16}{'train':>7}{'test':>7}{'train groups':>14}{'test groups':>13}"]
        for g in sorted(self.counts):
            c, k = self.counts[g], self.groups.get(g, {})
            lines.append(f"{g:<16}{c.get('train', 0):>7}{c.get('test', 0):>7}{k.get('train', 0):>14}{k.get('test', 0):>13}")
        tot = {s: sum(c.get(s, 0) for c in self.counts.values()) for s in SIDES}
        lines.append(f"{'total':<16}{tot['train']:>7}{tot['test']:>7}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------


def is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def _genre_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _csv_rows(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(column names, rows) of a CSV, names lower-case and values stripped."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        return cols, [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]


def read_manifest(csv_path: Path, base: Path | None = None) -> list[Item]:
    """Items of a manifest CSV (columns path, genre, optional artist and split)."""
    try:
        cols, rows = _csv_rows(csv_path)
    except OSError as exc:
        raise DatasetError(f"cannot read manifest {csv_path}: {exc}") from exc
    if "path" not in cols or "genre" not in cols:
        raise DatasetError(f"manifest {csv_path} needs the columns path and genre (has: {', '.join(cols) or 'none'})")
    presplit = any(row.get("split") for row in rows)
    items = []
    for n, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("genre"):
            raise DatasetError(f"manifest {csv_path} line {n}: empty path or genre")
        side = row.get("split", "").lower()
        if presplit and side not in SIDES:
            raise DatasetError(f"manifest {csv_path} line {n}: split is {row.get('split')!r}; give train or test on "
                               "every row, or leave the split column empty to split by --test-fraction")
        p = Path(row["path"])
        if not p.is_absolute():
            cands = [csv_path.parent / p] + ([base / p] if base is not None else [])
            p = next((c for c in cands if c.exists()), cands[0])
        items.append(Item(p, row["genre"], row.get("artist", ""), side))
    return items


def discover(src: str | Path, manifest: str | Path | None = None) -> tuple[list[Item], str, list[str]]:
    """(items, layout name, ignored non-audio files) of a source collection."""
    root = Path(src)
    if manifest is not None:
        items = read_manifest(Path(manifest), base=root if root.is_dir() else None)
        audio = [i for i in items if is_audio(i.path)]
        ignored = [str(i.path) for i in items if not is_audio(i.path)]
        return audio, "manifest", ignored
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder (give a dataset folder, or --manifest CSV)")
    subdirs = {p.name for p in _genre_dirs(root)}
    if subdirs & set(SIDES) and subdirs <= set(SIDES) | {"holdout"}:
        layout, genre_roots = "train/test", [g for s in sorted(subdirs & set(SIDES)) for g in _genre_dirs(root / s)]
    elif "genres" in subdirs and len(subdirs) <= 2:
        layout, genre_roots = "gtzan", _genre_dirs(root / "genres")
    else:
        layout, genre_roots = ("gtzan" if root.name == "genres" else "flat"), _genre_dirs(root)
    if not genre_roots:
        raise DatasetError(f"{root} has no genre folders (expected <genre>/*, train|test/<genre>/* or genres/<genre>/*)")
    items: list[Item] = []
    ignored: list[str] = []
    for gdir in genre_roots:
        for f in _files_under(gdir):
            if is_audio(f):
                items.append(Item(f, gdir.name))
            elif not f.name.startswith("."):
                ignored.append(str(f))
    # genres with no files at all still count (reported as empty)
    for gdir in genre_roots:
        if not any(i.genre == gdir.name for i in items):
            items.append(Item(gdir / "", gdir.name, "\0empty"))
    return items, layout, ignored


def artist_from_name(path: Path) -> str:
    """The `artist` of an `artist-title.ext` file name ('' when there is no '-')."""
    stem = path.stem
    return stem.split("-", 1)[0].strip().lower() if "-" in stem else ""


def readability(path: Path, probe_audio: bool = True) -> str:
    """'' when the file can be read (and, with probe_audio, ffprobe finds audio), else why not."""
    try:
        with open(path, "rb") as fh:
            if not fh.read(1):
                return "the file is empty"
    except OSError as exc:
        return exc.strerror or str(exc)
    if probe_audio:
        from shared.audio import DecodeError, probe

        try:
            probe(path)
        except DecodeError as exc:
            return str(exc)
    return ""


# --------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------


def _key(seed: int, *parts: str) -> str:
    return hashlib.sha256("\0".join((str(seed), *parts)).encode("utf-8", "surrogateescape")).hexdigest()


def group_of(item: Item, group_by: str) -> str:
    if group_by == "artist":
        return item.artist.strip().lower() or artist_from_name(item.path) or f"song:{item.path}"
    if group_by == "song":
        return f"song:{item.path}"
    raise ValueError(f"unknown group_by {group_by!r}; use one of {GROUP_BY}")


def split_items(items: Sequence[Item], test_fraction: float, seed: int = 0, group_by: str = "song") -> dict[Item, str]:
    """Assign every item to 'train' or 'test' (see the module docstring)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    by_genre: dict[str, dict[str, list[Item]]] = defaultdict(lambda: defaultdict(list))
    for it in items:
        by_genre[it.genre][group_of(it, group_by)].append(it)
    out: dict[Item, str] = {}
    for genre in sorted(by_genre):
        groups = by_genre[genre]
        total = sum(len(v) for v in groups.values())
        target = test_fraction * total
        order = sorted(groups, key=lambda g: _key(seed, genre, g))
        test_groups: list[str] = []
        n_test = 0
        if len(order) >= 2:
            for g in order:
                if n_test >= target or len(test_groups) == len(order) - 1:
                    break
                size = len(groups[g])
                # take a group unless it overshoots the target by more than it helps
                if n_test == 0 or abs(n_test + size - target) <= abs(target - n_test):
                    test_groups.append(g)
                    n_test += size
        chosen = set(test_groups)
        for g, members in groups.items():
            for it in members:
                out[it] = "test" if g in chosen else "train"
    return out


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _place(src: Path, dst: Path, copy: bool) -> None:
    """A copy, else a hard link, else (another file system) a symbolic link."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copy2(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        os.symlink(os.path.abspath(src), dst)


def _unique_name(item: Item, taken: set[str], folder: str) -> str:
    name = item.path.name
    if f"{folder}/{name}" in taken:
        h = hashlib.sha256(str(item.path).encode("utf-8", "surrogateescape")).hexdigest()[:8]
        name = f"{item.path.stem}-{h}{item.path.suffix}"
    taken.add(f"{folder}/{name}")
    return name


def split_dataset(
    src: str | Path,
    dest: str | Path,
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
    group_by: str = "song",
    manifest: str | Path | None = None,
    copy: bool = False,
    probe_audio: bool = True,
    progress: bool = False,
) -> SplitReport:
    """Discover, check, split and write a dataset; returns what happened."""
    dest = Path(dest)
    for side in SIDES:
        if (dest / side).exists() and any((dest / side).iterdir()):
            raise DatasetError(f"{dest / side} already exists and is not empty; choose an empty DEST")
    items, layout, ignored = discover(src, manifest)
    report = SplitReport(layout=layout, ignored=ignored)
    genres_all = sorted({i.genre for i in items})
    real = [i for i in items if i.artist != "\0empty"]
    it: Iterable[Item] = real
    if progress:
        from tqdm import tqdm

        it = tqdm(real, desc="checking", unit="file")
    good: list[Item] = []
    for item in it:
        why = readability(item.path, probe_audio)
        if why:
            report.unreadable.append((str(item.path), why))
        else:
            good.append(item)
    report.empty_genres = [g for g in genres_all if not any(i.genre == g for i in good)]
    if not good:
        raise DatasetError(f"no readable audio files found in {manifest or src}")
    if group_by == "artist":
        unnamed = [i for i in good if not i.artist and not artist_from_name(i.path)]
        if unnamed:
            report.warnings.append(
                f"{len(unnamed)} files have no artist (no manifest row, no 'artist-title' name); each is its own group"
            )
    if any(i.split for i in good):
        sides = {i: i.split for i in good}
        report.split_from = "manifest"
        across = {group_of(i, group_by) for i in good if sides[i] == "train"} & {
            group_of(i, group_by) for i in good if sides[i] == "test"}
        if across:
            report.warnings.append(f"the manifest's split puts {len(across)} {group_by} groups on both sides "
                                   f"(e.g. {sorted(across)[0]!r})")
    else:
        sides = split_items(good, test_fraction, seed, group_by)
    taken: set[str] = set()
    rows = []
    for item in sorted(good, key=lambda i: (i.genre, str(i.path))):
        side = sides[item]
        folder = f"{side}/{item.genre}"
        name = _unique_name(item, taken, folder)
        _place(item.path, dest / side / item.genre / name, copy)
        # The source as reports name data ($GENRE_DATA_ROOT/..., ~/...), and not how the
        # file was placed: split.csv is part of the data set's fingerprint, which must not
        # depend on the machine or the file system that made it.
        rows.append({"path": f"{folder}/{name}", "genre": item.genre, "artist": item.artist or artist_from_name(item.path),
                     "split": side, "source": portable_path(item.path)})
    with open(dest / SPLIT_MANIFEST, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "genre", "artist", "split", "source"])
        w.writeheader()
        w.writerows(rows)
    for g in sorted({i.genre for i in good}):
        members = [i for i in good if i.genre == g]
        report.counts[g] = {s: sum(1 for i in members if sides[i] == s) for s in SIDES}
        report.groups[g] = {s: len({group_of(i, group_by) for i in members if sides[i] == s}) for s in SIDES}
        for s in SIDES:
            if report.counts[g][s] == 0:
                report.one_sided[g] = s
    return report


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


@dataclass
class ArtistIndex:
    """Artists of manifest rows, looked up by the file's path, else by (genre, stem), else
    by a stem that only one genre of the manifests has. The genre is needed because
    collections reuse names across genre folders (classical/1.mp3, pop/1.mp3); it lets a
    render train/blues/x.wav find its source row midi/blues/x.mid."""

    by_path: dict[str, str] = field(default_factory=dict)
    by_genre_stem: dict[tuple[str, str], str] = field(default_factory=dict)
    by_stem: dict[str, str] = field(default_factory=dict)

    def artist(self, path: Path, genre: str) -> str:
        return (self.by_path.get(os.path.abspath(path)) or self.by_genre_stem.get((genre.lower(), path.stem))
                or self.by_stem.get(path.stem, ""))


def _artists_from_csv(root: Path, manifest: Path | None = None) -> ArtistIndex:
    """The artists named by `manifest`, or by a split.csv / manifest.csv at root or its parent."""
    index = ArtistIndex()
    genres_of_stem: dict[str, set[str]] = defaultdict(set)
    cands = [manifest] if manifest is not None else [f / n for f in (root, root.parent) for n in (SPLIT_MANIFEST, "manifest.csv")]
    for p in cands:
        if not p.is_file():
            continue
        try:
            _, rows = _csv_rows(p)
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            logger.warning("ignoring %s: %s", p, exc)
            continue
        for row in rows:
            if not row.get("path"):
                continue
            path = Path(row["path"])
            genre = (row.get("genre") or path.parent.name).lower()
            genres_of_stem[path.stem].add(genre)
            artist = row.get("artist", "").lower()
            if artist:
                index.by_path.setdefault(os.path.abspath(p.parent / path), artist)
                index.by_genre_stem.setdefault((genre, path.stem), artist)
    index.by_stem = {stem: a for (_, stem), a in index.by_genre_stem.items() if len(genres_of_stem[stem]) == 1}
    return index


def load_labelled_songs(
    root: str | Path, *, group_by: str = "artist", manifest: str | Path | None = None
) -> list[tuple[Path, str, str]]:
    """(path, genre, group) of every audio file under root/<genre>/, sorted by genre and path.

    The group is the artist when `manifest` (or a split.csv/manifest.csv at root or its
    parent) names one for the file (group_by='artist'; see ArtistIndex), else the song
    itself. Genre names are the folder names; their index order is decided later by
    sorting, never by this listing."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    genre_dirs = _genre_dirs(root)
    if not genre_dirs:
        raise DatasetError(f"{root} has no <genre>/ folders")
    if manifest is not None and not Path(manifest).is_file():
        raise DatasetError(f"manifest {manifest} does not exist")
    artists = _artists_from_csv(root, Path(manifest) if manifest else None) if group_by == "artist" else ArtistIndex()
    out = []
    for gdir in genre_dirs:
        for f in _files_under(gdir):
            if is_audio(f):
                artist = artists.artist(f, gdir.name)
                out.append((f, gdir.name, f"artist:{artist}" if artist else f"song:{f.relative_to(root)}"))
    out.sort(key=lambda t: (t[1], str(t[0])))
    return out


def training_side(dataset: str | Path) -> Path:
    """DATASET/train when it exists, else DATASET itself (a flat <genre>/* tree)."""
    d = Path(dataset)
    return d / "train" if (d / "train").is_dir() else d


def genre_counts(songs: Sequence[tuple[Path, str, str]]) -> dict[str, int]:
    return dict(sorted(Counter(g for _, g, _ in songs).items()))


SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def source_name(folder: Path) -> str:
    """Default name of a dataset folder: its own, or its parent's for a train/test side."""
    folder = Path(os.path.abspath(folder))
    return folder.parent.name if folder.name in SIDES else folder.name


def parse_sources(specs: Sequence[str]) -> list[tuple[str, Path]]:
    """(name, folder) of each ``NAME=PATH`` or ``PATH`` argument. Names must be unique and,
    with several sources, plain words: they prefix song ids and name report entries and files."""
    out = []
    for spec in specs:
        name, eq, rest = spec.partition("=")
        if eq and SOURCE_NAME.fullmatch(name) and rest:
            out.append((name, Path(rest)))
        else:
            out.append((source_name(Path(spec)), Path(spec)))
    names = [n for n, _ in out]
    if len(specs) > 1:
        for name, folder in out:
            if not SOURCE_NAME.fullmatch(name):
                raise DatasetError(f"cannot name the source {folder} {name!r}; write it as NAME=PATH (NAME: letters, "
                                   "digits, '_', '.', '-')")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DatasetError(f"two sources are named {dup[0]!r}; write them as NAME=PATH with different names")
    return out
