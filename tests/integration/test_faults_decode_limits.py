"""The decoder's limits against hostile files, with the real ffmpeg (no broker needed).

The e2e bad-input suite shows each file's verdict through the services; these pin down
the limits themselves: a declared-length bomb is refused before decoding, a bomb that
hides its length is cut at GENRE_MAX_DECODED_SECONDS, a slow decode at
GENRE_DECODE_TIMEOUT_S, a truncated file fails before its last chunk is handed out,
and the settings' defaults are sane.
"""

from __future__ import annotations

import time

import pytest

from shared.audio import DecodeError, chunk_song, iter_mono_blocks
from shared.featurespec import DEFAULT_SPEC
from shared.settings import Settings
from tests.fixtures.audio import make_song, write_audio
from tests.fixtures.bad_input import write_constant_flac, write_repeated_mp3


def test_defaults_are_sane() -> None:
    s = Settings()
    assert 3 * 3600 < s.max_decoded_seconds <= 24 * 3600  # a 3-hour DJ mix passes, a day does not
    assert 60 <= s.decode_timeout_s <= 3600
    assert 0 < s.min_chunk_seconds <= 30


def test_a_bomb_that_declares_its_length_is_refused_before_decoding(tmp_path) -> None:  # noqa: ANN001
    bomb = write_constant_flac(tmp_path / "bomb.flac", 10 * 3600, sample_rate=8000)
    assert bomb.stat().st_size < 100_000  # 10 hours of audio in under 100 kB
    t0 = time.monotonic()
    with pytest.raises(DecodeError, match=r"declares 36000 s of audio, longer than the limit of 14400 s"):
        next(chunk_song(bomb, DEFAULT_SPEC, max_seconds=Settings().max_decoded_seconds))
    assert time.monotonic() - t0 < 5, "the declared length alone must refuse it"


def test_a_bomb_that_hides_its_length_is_cut_at_the_decoded_limit(tmp_path) -> None:  # noqa: ANN001
    bomb = write_constant_flac(tmp_path / "stream.flac", 2 * 3600, sample_rate=8000, declare_length=False)
    chunks = 0
    with pytest.raises(DecodeError, match=r"decoded audio is longer than the limit of 95 s"):
        for _ in chunk_song(bomb, DEFAULT_SPEC, max_seconds=95):
            chunks += 1
    assert chunks <= 3  # at most the chunks that fit under the limit were handed out


def test_a_slow_decode_is_stopped_at_the_time_limit(tmp_path) -> None:  # noqa: ANN001
    long = write_repeated_mp3(tmp_path / "long.mp3", "drone", 3600, seed=3)
    t0 = time.monotonic()
    with pytest.raises(DecodeError, match=r"decoding took longer than 0.5 s \(GENRE_DECODE_TIMEOUT_S\)"):
        for _ in iter_mono_blocks(long, 22050, timeout_s=0.5):
            pass
    assert time.monotonic() - t0 < 10


def test_a_truncated_file_fails_before_its_last_chunk(tmp_path) -> None:  # noqa: ANN001
    full = write_audio(tmp_path / "full.flac", make_song("clicks", 95, seed=8))
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.8)])
    seen = []
    with pytest.raises(DecodeError, match=r"truncated or damaged: it declares 95.0 s"):
        for c in chunk_song(cut, DEFAULT_SPEC):
            seen.append(c)
    assert seen and not any(c.last for c in seen), "no chunk of a truncated song may claim to be its last"
    assert len(list(chunk_song(full, DEFAULT_SPEC))) == 3  # the intact file is fine (its 5-s tail is dropped)


def test_eight_channels_at_192_khz_mix_down_in_bounded_blocks(tmp_path) -> None:  # noqa: ANN001
    path = write_audio(tmp_path / "8ch.flac", make_song("clicks", 12, seed=9, sr=192_000), sr=192_000, channels=8)
    blocks = list(iter_mono_blocks(path, 22050))
    assert max(len(b) for b in blocks) <= 65536
    assert abs(sum(len(b) for b in blocks) - 12 * 22050) <= 2
