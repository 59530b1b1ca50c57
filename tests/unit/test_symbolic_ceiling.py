"""tools/symbolic_ceiling.py: descriptors read from generated MIDI files, the lenient
loader, and the bound on a manifest whose genres the descriptors separate."""

from __future__ import annotations

import csv
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

pretty_midi = pytest.importorskip("pretty_midi", reason="pip install -e .[test]")

TOOL = Path(__file__).resolve().parents[2] / "tools" / "symbolic_ceiling.py"
spec = importlib.util.spec_from_file_location("symbolic_ceiling", TOOL)
ceiling_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ceiling_tool)


def write_song(path: Path, *, program: int, drums: bool, tempo: float, seed: int) -> Path:
    """A 40-s piece: one pitched part of `program` in quarter notes (chords when there are
    no drums), plus a kick/snare pattern in eighths when `drums`."""
    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    beat = 60.0 / tempo
    part = pretty_midi.Instrument(program=program)
    t = 0.0
    while t < 40.0:
        root = int(rng.integers(48, 60))
        for pitch in ([root] if drums else [root, root + 4, root + 7]):
            part.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=t, end=t + beat * 0.9))
        t += beat
    pm.instruments.append(part)
    if drums:
        kit = pretty_midi.Instrument(program=0, is_drum=True)
        for i in range(int(40.0 / (beat / 2))):
            kit.notes.append(pretty_midi.Note(velocity=100, pitch=36 if i % 2 == 0 else 38, start=i * beat / 2, end=i * beat / 2 + 0.1))
        pm.instruments.append(kit)
    pm.write(str(path))
    return path


def test_instrumentation_reads_programs_drums_and_tempo(tmp_path: Path) -> None:
    piano = ceiling_tool.instrumentation(ceiling_tool.load_midi(write_song(tmp_path / "p.mid", program=0, drums=False, tempo=80, seed=0)), 30.0)
    band = ceiling_tool.instrumentation(ceiling_tool.load_midi(write_song(tmp_path / "b.mid", program=29, drums=True, tempo=140, seed=0)), 30.0)
    assert piano[0] == pytest.approx(1.0) and piano[:16].sum() == pytest.approx(1.0)  # all notes in family 0 (pianos)
    assert band[3] == pytest.approx(1.0)  # program 29, overdriven guitar: family 3
    drum_share, has_drums, tempo = 16 + 25, 16 + 26, 16 + 27
    assert piano[drum_share] == 0 and piano[has_drums] == 0
    assert band[drum_share] == pytest.approx(2 / 3, abs=0.02) and band[has_drums] == 1  # two hits per beat, one note
    assert (piano[tempo], band[tempo]) == pytest.approx((80.0, 140.0), abs=0.01)  # MIDI stores whole microseconds per beat
    assert band[16 + 36 - 35] == pytest.approx(0.5, abs=0.02)  # half the hits are kick drums


def test_harmony_sees_chords_and_onsets_on_the_beat(tmp_path: Path) -> None:
    chords = ceiling_tool.harmony_rhythm(ceiling_tool.load_midi(write_song(tmp_path / "c.mid", program=0, drums=False, tempo=120, seed=1)), 30.0)
    intervals, spacing, swing, polyphony = chords[12:24], chords[24:32], chords[32:44], chords[44]
    assert intervals[4] > 0.3 and intervals[3] > 0.3 and intervals[7] > 0.3  # major thirds, minor thirds, fifths
    assert spacing[4] == pytest.approx(1.0)  # every onset one beat after the last: bin [1.0, 1.25)
    assert swing[0] == pytest.approx(1.0)  # and on the beat
    assert polyphony == pytest.approx(3.0, abs=0.2)


def test_lenient_loader_reads_an_invalid_key_signature(tmp_path: Path) -> None:
    # key signature with 4 flats and mode 255 (mido refuses it), then one note
    events = bytes([0x00, 0xFF, 0x59, 0x02, 0xFC, 0xFF, 0x00, 0xC0, 0x18, 0x00, 0x90, 0x3C, 0x64,
                    0x83, 0x60, 0x80, 0x3C, 0x00, 0x00, 0xFF, 0x2F, 0x00])
    path = tmp_path / "bad-key.mid"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(events)) + events)
    with pytest.raises(Exception):
        pretty_midi.PrettyMIDI(str(path))
    pm = ceiling_tool.load_midi(path)
    assert [(n.pitch, inst.program) for inst in pm.instruments for n in inst.notes] == [(60, 24)]
    import mido.midifiles.meta as meta

    assert type(meta._key_signature_decode) is dict  # the patch is undone


def test_ceiling_separates_genres_the_descriptors_tell_apart(tmp_path: Path) -> None:
    rows = []
    for genre, program, drums, tempo in (("ballad", 0, False, 70), ("metal", 30, True, 170)):
        (tmp_path / genre).mkdir()
        for i in range(6):
            path = write_song(tmp_path / genre / f"a{i}-song.mid", program=program, drums=drums, tempo=tempo + 3 * i, seed=i)
            rows.append({"path": f"{genre}/{path.name}", "genre": genre, "artist": f"{genre}{i}", "split": "test" if i >= 4 else "train"})
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    report = ceiling_tool.ceiling(manifest, seconds=30.0, cv=2)
    assert (report["train_songs"], report["test_songs"], report["chance"]) == (8, 4, 0.5)
    assert set(report["song_accuracy"]) == {f"{g}/{c}" for g in ceiling_tool.GROUPS for c in ceiling_tool.classifiers(0)}
    assert report["song_accuracy"]["instrumentation/random_forest"] == [1.0] * len(ceiling_tool.SEEDS)
    assert report["cv_song_accuracy"]["all/logistic_regression"] == [1.0] * len(ceiling_tool.SEEDS)
