"""Decoding and chunking with the real ffmpeg."""

import numpy as np
import pytest

from shared.audio import DecodeError, chunk_song, decode_file, probe
from shared.featurespec import FeatureSpec
from tests.fixtures.audio import write_audio

SPEC = FeatureSpec()


def test_chunks_are_sample_accurate_with_padded_tail(tmp_path):
    sr = SPEC.sample_rate
    n = 2 * SPEC.chunk_samples + 12 * sr + 123
    pcm = (np.random.RandomState(0).rand(n).astype(np.float32) - 0.5) * 0.5
    path = write_audio(tmp_path / "x.flac", pcm, sr)
    chunks = list(chunk_song(path, SPEC, min_chunk_seconds=10))
    assert [c.index for c in chunks] == [0, 1, 2]
    assert [c.last for c in chunks] == [False, False, True]
    assert all(len(c.pcm) == SPEC.chunk_samples for c in chunks)
    assert chunks[2].n_samples == n - 2 * SPEC.chunk_samples
    np.testing.assert_allclose(np.concatenate([c.pcm for c in chunks])[:n], pcm, atol=1e-4)  # FLAC is 16-bit
    assert not chunks[2].pcm[chunks[2].n_samples:].any()  # padded at the end with zeros


def test_short_tail_is_dropped_and_short_song_is_an_error(tmp_path):
    sr = SPEC.sample_rate
    path = write_audio(tmp_path / "y.wav", np.full(SPEC.chunk_samples + 5 * sr, 0.1, np.float32), sr)
    chunks = list(chunk_song(path, SPEC, min_chunk_seconds=10))
    assert len(chunks) == 1 and chunks[0].last
    short = write_audio(tmp_path / "short.wav", np.full(3 * sr, 0.1, np.float32), sr)
    with pytest.raises(DecodeError, match="shorter than the minimum"):
        list(chunk_song(short, SPEC, min_chunk_seconds=10))


def test_stereo_is_mixed_down_as_mean_and_resampled(tmp_path):
    sr = 44100
    t = np.arange(sr * 2) / sr
    left = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / "st.wav"
    import subprocess

    both = np.stack([left, np.zeros_like(left)], axis=1)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "f32le", "-ar", str(sr), "-ac", "2", "-i", "-",
                    "-c:a", "pcm_f32le", str(path)], input=both.tobytes(), check=True)
    mono, rate = decode_file(path)
    assert rate == sr
    np.testing.assert_array_equal(mono, left / np.float32(2))
    res, rate = decode_file(path, 22050)
    assert rate == 22050 and abs(len(res) - sr) <= 1


@pytest.mark.parametrize("content,reason", [(b"", "empty"), (b"this is not audio at all\n" * 10, "not a readable audio")])
def test_bad_files_give_clear_errors(tmp_path, content, reason):
    path = tmp_path / "bad file 'q'.mp3"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason):
        list(chunk_song(path, SPEC))


def test_decoded_length_limit(tmp_path):
    path = write_audio(tmp_path / "long.wav", np.zeros(22050 * 20, np.float32))
    with pytest.raises(DecodeError, match="longer than the limit"):
        list(chunk_song(path, SPEC, max_seconds=5))


def test_unicode_names_with_spaces_and_quotes(tmp_path):
    path = write_audio(tmp_path / "My Album" / "02 Track ünïcode \"q\" 'x'.flac", np.full(22050 * 11, 0.2, np.float32))
    assert probe(path).sample_rate == 22050
    assert len(list(chunk_song(path, SPEC))) == 1


@pytest.mark.parametrize("ext,codec", [
    ("mp3", ()), ("flac", ()), ("ogg", ()), ("opus", ("-c:a", "libopus")), ("wav", ()), ("m4a", ()), ("au", ()),
])
def test_every_common_format_decodes_to_the_spec_rate(tmp_path, ext, codec):
    sr = 44100 if ext != "opus" else 48000
    t = np.arange(int(sr * 12.5)) / sr
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = write_audio(tmp_path / f"song.{ext}", pcm, sr, codec_args=codec)
    chunks = list(chunk_song(path, SPEC, min_chunk_seconds=10))
    assert len(chunks) == 1 and chunks[0].last
    n = chunks[0].n_samples
    assert abs(n - int(12.5 * SPEC.sample_rate)) < 0.06 * SPEC.sample_rate  # encoder padding at most a frame or two
    spectrum = np.abs(np.fft.rfft(chunks[0].pcm[:n]))
    assert abs(np.argmax(spectrum) * SPEC.sample_rate / n - 440) < 2  # resampled, not re-pitched
