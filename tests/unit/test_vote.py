import numpy as np
import pytest

from shared.vote import VoteTally, song_verdict

GENRES = ["blues", "jazz", "rock"]


def test_mode_of_chunk_votes():
    p = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.1, 0.7]])
    v = song_verdict(p, GENRES)
    assert v.genre == "rock"
    assert v.votes == ["rock", "blues", "rock"]
    assert v.confidence == pytest.approx(2 / 3)
    assert v.probabilities["blues"] == pytest.approx(0.3)


def test_confidence_is_the_share_of_chunks_with_unequal_counts():
    """5 chunks over 3 genres (rock 3, blues 1, jazz 1): confidence is 3/5 of the chunks,
    not 3/3 genres (or any other divisor); probabilities are means over the 5 chunks."""
    p = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1], [0.3, 0.1, 0.6]])
    v = song_verdict(p, GENRES)
    assert v.genre == "rock"
    assert v.votes == ["rock", "blues", "rock", "jazz", "rock"]
    assert v.confidence == pytest.approx(3 / 5)
    assert v.probabilities == pytest.approx({"blues": 1.3 / 5, "jazz": 1.5 / 5, "rock": 2.2 / 5})
    two = song_verdict(np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1]]), GENRES)  # 2 chunks, 3 genres
    assert two.confidence == pytest.approx(1 / 2)


def test_tie_broken_by_summed_probability_then_name():
    p = np.array([[0.9, 0.05, 0.05], [0.1, 0.0, 0.9], [0.0, 0.55, 0.45]])
    # votes: blues, rock, jazz -> three-way tie; sums: blues 1.0, jazz 0.6, rock 1.4
    assert song_verdict(p, GENRES).genre == "rock"
    even = np.array([[0.6, 0.4, 0.0], [0.4, 0.6, 0.0]])
    assert song_verdict(even, GENRES).genre == "blues"  # equal counts and sums: name order
    assert song_verdict(even[::-1], GENRES).genre == "blues"  # chunk order does not matter


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"expected \(n_chunks >= 1, 3\) probabilities, got \(0, 3\)"):
        song_verdict(np.zeros((0, 3)), GENRES)
    with pytest.raises(ValueError, match="got \\(2, 2\\)"):
        song_verdict(np.zeros((2, 2)), GENRES)


def test_tally_complete_only_with_every_index_and_the_last():
    t = VoteTally("s1")
    t.add(1, False, np.array([0, 1, 0]))
    assert not t.complete
    t.add(2, True, np.array([0, 0, 1]))
    assert not t.complete  # chunk 0 missing
    t.add(0, False, np.array([1, 0, 0]))
    t.add(1, False, np.array([0, 1, 0]))  # duplicate
    assert t.complete
    assert t.stacked().shape == (3, 3)


def test_tally_error_wins_once_complete():
    t = VoteTally("s2")
    t.add(0, False, np.array([1, 0, 0]))
    t.add(1, True, error="ffmpeg could not decode the file: boom")
    assert t.complete and t.error().startswith("ffmpeg")


def test_tally_stores_float32_and_has_no_error_without_one():
    """Chunk probabilities are kept as float32 (what the classifier emits, half the memory)."""
    t = VoteTally("s3")
    t.add(0, True, np.array([0.25, 0.75], dtype=np.float64))
    assert t.complete and t.error() == ""
    assert t.stacked().dtype == np.float32
