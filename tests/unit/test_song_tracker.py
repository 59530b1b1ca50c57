import numpy as np

from shared.song_tracker import SongTracker

P = np.array([0.2, 0.8], dtype=np.float32)


def test_commit_offset_holds_at_oldest_incomplete_song():
    t = SongTracker()
    assert t.observe("p0", 10, "a", index=0, last=False, probabilities=P) is None
    assert t.observe("p0", 11, "b", index=0, last=False, probabilities=P) is None
    done = t.observe("p0", 12, "a", index=1, last=True, probabilities=P)
    assert done is not None and done.song_id == "a"
    assert t.safe_offsets() == {"p0": 11}  # b still open from offset 11
    assert t.observe("p0", 13, "b", index=1, last=True, probabilities=P) is not None
    assert t.safe_offsets() == {"p0": 14}


def test_replay_ignores_tails_of_songs_already_decided():
    t = SongTracker()
    # after a restart at offset 12: song a's chunk 1 arrives without its chunk 0
    assert t.observe("p0", 12, "a", index=1, last=True, probabilities=P) is None
    assert len(t) == 0
    assert t.safe_offsets() == {"p0": 13}


def test_interleaved_songs_and_duplicates():
    t = SongTracker()
    seq = [("a", 0, False), ("b", 0, False), ("a", 1, False), ("b", 1, True), ("a", 1, False), ("a", 2, True)]
    finished = []
    for off, (song, idx, last) in enumerate(seq):
        tally = t.observe("p", off, song, index=idx, last=last, probabilities=P)
        if tally:
            finished.append((song, tally.last_index))
    assert finished == [("b", 1), ("a", 2)]


def test_forget_partitions_on_revocation():
    t = SongTracker()
    t.observe("p0", 0, "a", index=0, last=False, probabilities=P)
    t.observe("p1", 0, "b", index=0, last=False, probabilities=P)
    t.forget_partitions({"p0"})
    assert len(t) == 1 and set(t.safe_offsets()) == {"p1"}


def test_stale_songs_expire():
    t = SongTracker()
    t.observe("p0", 5, "a", index=0, last=False, probabilities=P)
    assert [x.song_id for x in t.stale(-1)] == ["a"]
    assert t.safe_offsets() == {"p0": 6}
