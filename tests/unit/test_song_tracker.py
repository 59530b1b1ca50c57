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


def test_two_songs_open_in_one_partition_hold_the_commit_at_the_older():
    """a opens at 10, b at 11: the safe offset stays at 10 (the min over open songs, not the
    last one seen) until a closes, whichever song closes first."""
    t = SongTracker()
    t.observe("p0", 10, "a", index=0, last=False, probabilities=P)
    t.observe("p0", 11, "b", index=0, last=False, probabilities=P)
    assert t.safe_offsets() == {"p0": 10}
    assert t.observe("p0", 12, "b", index=1, last=True, probabilities=P).song_id == "b"
    assert t.safe_offsets() == {"p0": 10}  # a is still open
    assert t.observe("p0", 13, "a", index=1, last=True, probabilities=P).song_id == "a"
    assert t.safe_offsets() == {"p0": 14}


def test_interleaved_chunks_of_two_songs_hold_the_commit_at_the_first_open_song():
    """Chunks of a and b alternate; the partition's safe offset is a's chunk 0 until a closes,
    and each partition is held only by its own songs."""
    t = SongTracker()
    seq = [("a", 0, False), ("b", 0, False), ("a", 1, False), ("b", 1, False), ("b", 2, True), ("a", 2, True)]
    safe = []
    for off, (song, idx, last) in enumerate(seq, start=10):
        t.observe("p0", off, song, index=idx, last=last, probabilities=P)
        safe.append(t.safe_offsets()["p0"])
    assert safe == [10, 10, 10, 10, 10, 16]
    t.observe("p1", 3, "c", index=0, last=False, probabilities=P)
    t.observe("p1", 4, "d", index=0, last=False, probabilities=P)
    t.observe("p0", 16, "e", index=0, last=False, probabilities=P)
    assert t.safe_offsets() == {"p0": 16, "p1": 3}


def test_restart_from_the_committed_offset_gives_every_open_song_its_verdict():
    """Consume part of a partition, 'commit' safe_offsets(), crash, and re-consume from the
    committed offset with a fresh tracker: both songs still get a verdict (a commit at b's
    chunk 0 would leave a's tail ignored and a without a verdict)."""
    log = [("a", 0, False), ("b", 0, False), ("a", 1, False), ("b", 1, True), ("a", 2, True)]
    first = SongTracker()
    for off, (song, idx, last) in enumerate(log[:3], start=10):
        assert first.observe("p0", off, song, index=idx, last=last, probabilities=P) is None
    committed = first.safe_offsets()["p0"]
    assert committed == 10

    restarted = SongTracker()
    verdicts = {}
    for off, (song, idx, last) in enumerate(log, start=10):
        if off < committed:
            continue
        tally = restarted.observe("p0", off, song, index=idx, last=last, probabilities=P)
        if tally is not None:
            verdicts[tally.song_id] = tally.last_index
    assert verdicts == {"b": 1, "a": 2}
    assert len(restarted) == 0 and restarted.safe_offsets() == {"p0": 15}


def test_a_song_keeps_what_its_chunk_0_said_and_its_first_error():
    """The tally carries the file name, production time and first-seen time of chunk 0 into
    the verdict, the song is pinned to chunk 0's model version, and a chunk's error is kept."""
    t = SongTracker()
    t.observe("p0", 0, "a", index=0, last=False, filename="a.mp3", produced_at=12.5, probabilities=P,
              model_version="v7")
    assert t.is_open("a") and t.model_version("a") == "v7" and t.versions_in_use() == {"v7"}
    assert t.model_version("nope") is None and not t.is_open("nope")
    done = t.observe("p0", 1, "a", index=1, last=True, error="decode failed", model_version="v8")
    assert (done.filename, done.produced_at, done.error()) == ("a.mp3", 12.5, "decode failed")
    assert done.first_seen > 0 and not t.is_open("a")
    plain = t.observe("p0", 2, "b", index=0, last=True, probabilities=P)
    assert (plain.filename, plain.produced_at, plain.error()) == ("", 0.0, "")
    t.observe("p0", 3, "c", index=0, last=False, probabilities=P)
    assert t.model_version("c") == ""


def test_advance_and_would_open_or_extend():
    """A dead-lettered record moves the watermark but never past an open song, and never back."""
    t = SongTracker()
    assert t.would_open_or_extend("a", 0) and not t.would_open_or_extend("a", 1)
    t.advance("p0", 4)
    assert t.safe_offsets() == {"p0": 5}
    t.observe("p0", 5, "a", index=0, last=False, probabilities=P)
    assert t.would_open_or_extend("a", 1)
    t.advance("p0", 6)
    assert t.safe_offsets() == {"p0": 5}
    t.observe("p0", 7, "a", index=1, last=True, probabilities=P)
    assert t.safe_offsets() == {"p0": 8}
    t.advance("p0", 2)  # an older record seen again moves nothing back
    assert t.safe_offsets() == {"p0": 8}
    t.observe("p0", 3, "z", index=1, last=True, probabilities=P)
    assert t.safe_offsets() == {"p0": 8}


def test_forget_partitions_drops_only_the_revoked_songs():
    t = SongTracker()
    t.observe("p0", 0, "a", index=0, last=False, probabilities=P)
    t.observe("p1", 0, "b", index=0, last=False, probabilities=P)
    t.forget_partitions({"p0", "never-seen"})
    assert t.is_open("b") and not t.is_open("a")
