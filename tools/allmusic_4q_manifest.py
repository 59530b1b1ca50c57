"""The manifest of real recordings of the genres the MIDI data alone teaches (blues, country,
folk, hiphop, jazz), with electronic and classical: clips of the 4Q emotion data set.

    python tools/allmusic_4q_manifest.py METADATA_CSV OUT_CSV [--test-share 0.3]

The 4Q data set (Panda, Malheiro & Paiva, "Novel audio features for music emotion
recognition", IEEE Trans. Affective Computing, 2018) is 900 30-s AllMusic previews of
commercial recordings, each with its artist, title and AllMusic genre tags. A copy is in
the public GitHub repository `Famelgas/MULT_TP2`: `Dataset/Q<n>/<song>.mp3`, metadata in
`Dataset/panda_dataset_taffc_metadata.csv` (METADATA_CSV). No licence is stated: research
use.

AllMusic tags are several per clip and coarse ("Pop/Rock" is one tag, so pop and rock
cannot be told apart: none of those clips is kept). A clip is kept when exactly one of its
style tags maps to a genre of ours and it has no other style tag; tags that say nothing of
the style (International, Vocal, Holiday, ...) are ignored. The split is by artist (an
artist's clips on one side), about `--test-share` of each genre's clips on the test side,
chosen by a hash of the artist's name: deterministic, independent of row order.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from collections import Counter, defaultdict
from pathlib import Path

GENRES = {"Blues": "blues", "Country": "country", "Folk": "folk", "Rap": "hiphop", "Jazz": "jazz",
          "Electronic": "electronic", "Classical": "classical"}
OTHER_STYLES = {"Pop/Rock", "R&B", "Latin", "Reggae", "New Age", "Avant-Garde"}
"""Style tags of no genre of ours: a clip with one of them is ambiguous and left out."""
SOURCE = ("Famelgas/MULT_TP2 (GitHub), Dataset/Q<n>/<song>.mp3; the 4Q emotion data set (Panda et al. 2018), "
          "AllMusic 30-s previews")
LICENSE = "no licence in the source repository; commercial recordings, research use"


def genre_of(tags: str) -> str | None:
    styles = {t.strip() for t in tags.split(";")} & (set(GENRES) | OTHER_STYLES)
    return GENRES.get(styles.pop()) if len(styles) == 1 else None


def artist_key(artist: str) -> str:
    return hashlib.sha256(artist.strip().lower().encode()).hexdigest()


def manifest_rows(meta: list[dict[str, str]], test_share: float) -> list[dict[str, str]]:
    rows = []
    for r in meta:
        genre = genre_of(r["GenresStr"])
        if genre:
            rows.append({"path": f"Dataset/{r['Quadrant']}/{r['Song']}.mp3", "genre": genre,
                         "artist": r["Artist"].strip(), "title": r["Title"].strip()})
    # artists in hash order; an artist goes to test while its main genre's test side is short
    clips: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        clips[r["artist"]][r["genre"]] += 1
    total = Counter(r["genre"] for r in rows)
    on_test: Counter = Counter()
    test_artists = set()
    for artist in sorted(clips, key=artist_key):
        main = clips[artist].most_common(1)[0][0]
        if on_test[main] + clips[artist][main] <= round(test_share * total[main]):
            test_artists.add(artist)
            on_test.update(clips[artist])
    for r in rows:
        r.update(split="test" if r["artist"] in test_artists else "train", source=SOURCE, license=LICENSE)
    return sorted(rows, key=lambda r: (r["genre"], r["path"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metadata", type=Path, help="Dataset/panda_dataset_taffc_metadata.csv of the 4Q copy")
    ap.add_argument("out", type=Path, help="manifest CSV to write (path, genre, artist, title, split, ...)")
    ap.add_argument("--test-share", type=float, default=0.3, help="share of each genre's clips on the test side")
    args = ap.parse_args()
    try:
        with args.metadata.open(newline="", encoding="utf-8") as f:
            meta = list(csv.DictReader(f))
    except OSError as exc:
        print(f"allmusic_4q_manifest: cannot read {args.metadata}: {exc}", file=sys.stderr)
        return 2
    if not meta or not {"Song", "Artist", "Title", "Quadrant", "GenresStr"} <= set(meta[0]):
        print(f"allmusic_4q_manifest: {args.metadata} is not the 4Q metadata (columns Song, Artist, Title, "
              "Quadrant, GenresStr)", file=sys.stderr)
        return 2
    rows = manifest_rows(meta, args.test_share)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["path", "genre", "artist", "title", "split", "source", "license"])
        w.writeheader()
        w.writerows(rows)
    print(f"{'genre':<12}{'train':>7}{'test':>6}{'artists':>9}")
    for genre in sorted({r["genre"] for r in rows}):
        side = Counter(r["split"] for r in rows if r["genre"] == genre)
        artists = len({r["artist"] for r in rows if r["genre"] == genre})
        print(f"{genre:<12}{side['train']:>7}{side['test']:>6}{artists:>9}")
    print(f"{len(rows)} clips of {len(meta)} kept -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
