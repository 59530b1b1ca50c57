"""Songs through the real broker and the three services as separate processes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT
from shared.content_id import song_id_for_file
from tests.fixtures.audio import make_song, write_audio
from tests.fixtures.kcat import kcat_produce

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def corpus(root: Path) -> dict[str, tuple[Path, str | None]]:
    """name -> (path, expected genre or None for an error verdict)."""
    songs = {
        "clicks one.mp3": ("clicks", 65, 1, ("-b:a", "192k")),           # 2 chunks, 5 s tail dropped
        "drone partial.flac": ("drone", 75, 2, ()),                       # 3 chunks, last one 15 s, padded
        "Dröne ünïcode 'q' \"x\".flac": ("drone", 40, 3, ()),            # unicode, quotes, spaces
        "clicks two.ogg": ("clicks", 95, 4, ()),                          # 3 chunks, 5 s tail dropped
        "drone three.m4a": ("drone", 31, 5, ()),
        "clicks three.wav": ("clicks", 30, 6, ()),
    }
    out: dict[str, tuple[Path, str | None]] = {}
    for name, (genre, seconds, seed, codec) in songs.items():
        out[name] = (write_audio(root / "Album" / name, make_song(genre, seconds, seed), codec_args=codec), genre)
    bad = root / "Album" / "corrupt.mp3"
    bad.write_bytes(b"\xff\xfb\x90\x64" + random.Random(7).randbytes(30000))
    out["corrupt.mp3"] = (bad, None)
    return out


def by_song(records: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        grouped[r["song_id"]].append(r)
    return grouped


def assert_one_verdict_each(records: list[dict], ids: dict[str, str]) -> dict[str, dict]:
    grouped = by_song(records)
    assert set(grouped) == set(ids.values()), "verdicts for unknown songs or songs without one"
    for song_id, vs in grouped.items():
        identities = {v["_identity"] for v in vs}
        assert len(identities) == 1, f"song {song_id} got {len(identities)} different verdicts: {vs}"
    return {song_id: vs[0] for song_id, vs in grouped.items()}


def test_songs_flow_end_to_end(pipeline, tmp_path):
    songs = corpus(tmp_path)
    pipeline.start()
    ids = pipeline.produce(*(p for p, _ in songs.values()))
    assert len(ids) == len(songs)
    verdicts = assert_one_verdict_each(pipeline.verdicts(len(songs)), ids)
    for name, (path, genre) in songs.items():
        v = verdicts[ids[str(path)]]
        assert v["filename"] == str(path)
        if genre is None:
            assert v["status"] == "error" and v["error"], v
            continue
        assert v["status"] == "ok", v
        assert v["genre"] == genre, (name, v)
        assert v["chunk_count"] == len(v["votes"]) >= 1
        assert 0 < v["confidence"] <= 1
        assert set(v["probabilities"]) == {"clicks", "drone"}
        assert v["model_version"] and 0 <= v["timings"]["end_to_end_s"] < 600
    partial = verdicts[ids[str(songs["drone partial.flac"][0])]]
    assert partial["chunk_count"] == 3
    assert verdicts[ids[str(songs["clicks one.mp3"][0])]]["chunk_count"] == 2

    # `genre results` prints each song once, with the same verdicts.
    res = pipeline.genre("results", "--json")
    printed = [json.loads(line) for line in res.stdout.splitlines()]
    assert sorted(r["song_id"] for r in printed) == sorted(ids.values())

    # The embedded default gives the same genres for the same files, and exit status 1 for the corrupt one.
    emb = subprocess.run([sys.executable, "-m", "shared.cli", "classify", "--json", "--model",
                          pipeline.env["GENRE_MODEL_PATH"], *(str(p) for p, _ in songs.values())],
                         cwd=REPO_ROOT, env=pipeline.env, capture_output=True, text=True, timeout=300)
    assert emb.returncode == 1, emb.stderr
    embedded = {json.loads(line)["filename"]: json.loads(line) for line in emb.stdout.splitlines()}
    for name, (path, genre) in songs.items():
        e = embedded[path.name]
        k = verdicts[ids[str(path)]]
        assert e["status"] == k["status"]
        if genre:
            assert (e["genre"], e["votes"], e["chunk_count"]) == (k["genre"], k["votes"], k["chunk_count"])


def test_extractor_killed_mid_run_loses_no_song(pipeline, tmp_path):
    paths = [write_audio(tmp_path / f"song {i}.flac", make_song(("clicks", "drone")[i % 2], 60 + 15 * (i % 3), 100 + i))
             for i in range(8)]
    pipeline.start()
    ids = pipeline.produce(*paths)
    extractor = pipeline.services["extractor"]
    time.sleep(4)
    extractor.kill()
    time.sleep(2)
    extractor.start()
    time.sleep(3)
    extractor.kill()
    extractor.start()
    verdicts = assert_one_verdict_each(pipeline.verdicts(len(paths)), ids)
    for i, path in enumerate(paths):
        v = verdicts[ids[str(path)]]
        assert v["status"] == "ok" and v["genre"] == ("clicks", "drone")[i % 2], v
    assert extractor.starts == 3


def test_a_song_sent_by_kcat_gets_the_verdict_genre_classify_gives_under_its_content_hash(pipeline, tmp_path):
    """The README's "Submit a song from any Kafka client": kcat sends the file to the audio
    topic; the verdict, keyed by the first 16 hex digits of its sha256sum, equals
    `genre classify`'s for the same file; bytes that are not audio get an error verdict."""
    mp3 = write_audio(tmp_path / "kcat" / "song.mp3", make_song("drone", 65, 21), codec_args=("-b:a", "320k"))
    notes = tmp_path / "kcat" / "notes.mp3"
    notes.write_bytes(b"not audio at all\n" * 100)
    pipeline.start()
    for path in (mp3, notes):
        res = kcat_produce(pipeline.settings, path, headers=(f"filename={path.name}",))
        assert res.returncode == 0, res.stderr
    ids = {"song.mp3": song_id_for_file(mp3), "notes.mp3": song_id_for_file(notes)}
    verdicts = assert_one_verdict_each(pipeline.verdicts(2), ids)
    song, bad = verdicts[ids["song.mp3"]], verdicts[ids["notes.mp3"]]
    assert (song["status"], song["filename"], song["genre"], song["chunk_count"]) == ("ok", "song.mp3", "drone", 2)
    assert (bad["status"], bad["filename"]) == ("error", "notes.mp3")
    assert bad["error"].startswith("not a readable audio file"), bad

    res = pipeline.genre("results", "--json", "--song", ids["song.mp3"])
    assert [json.loads(line)["genre"] for line in res.stdout.splitlines()] == ["drone"]
    emb = subprocess.run([sys.executable, "-m", "shared.cli", "classify", "--json", "--model",
                          pipeline.env["GENRE_MODEL_PATH"], str(mp3)],
                         cwd=REPO_ROOT, env=pipeline.env, capture_output=True, text=True, timeout=300)
    assert emb.returncode == 0, emb.stderr
    e = json.loads(emb.stdout)
    assert (e["song_id"], e["genre"], e["votes"], e["chunk_count"]) == (
        song["song_id"], song["genre"], song["votes"], song["chunk_count"])
    assert e["probabilities"] == pytest.approx(song["probabilities"], abs=1e-4)
