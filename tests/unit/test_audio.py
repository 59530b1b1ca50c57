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
    with pytest.raises(DecodeError, match=reason) as e:
        list(chunk_song(path, SPEC))
    assert str(path) not in str(e.value) and "bad file" not in str(e.value)  # the path is scrubbed
    if content:
        assert "(the file: " in str(e.value)


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


# ---- Pure logic, no ffmpeg: small specs, hand-computed expectations ----

import io  # noqa: E402
import sys  # noqa: E402

from shared import audio  # noqa: E402
from shared.audio import (  # noqa: E402
    AudioInfo, SongChunk, _check_complete, _check_exit, _ffmpeg_command, _parse_probe, _pcm_blocks, _scrub, chunk_blocks,
)

TINY = FeatureSpec(sample_rate=10, chunk_seconds=1.0)  # chunks of 10 samples; min_chunk_seconds 0.5 = 5 samples


def _ramp(n, start=0):
    return np.arange(start, start + n, dtype=np.float32)


def _chunks(blocks, min_chunk_seconds=0.5, spec=TINY):
    return list(chunk_blocks(iter(blocks), spec, min_chunk_seconds=min_chunk_seconds))


def test_chunk_blocks_cuts_blocks_of_any_size_at_exact_multiples():
    song = _ramp(27)
    blocks = [song[:3], song[3:3], song[3:14], song[14:15], song[15:27]]  # an empty block too
    chunks = _chunks(blocks)
    assert [(c.index, c.n_samples, c.last) for c in chunks] == [(0, 10, False), (1, 10, False), (2, 7, True)]
    for c in chunks:
        assert c.pcm.dtype == np.float32 and c.pcm.shape == (10,)
    np.testing.assert_array_equal(chunks[0].pcm, _ramp(10))
    np.testing.assert_array_equal(chunks[1].pcm, _ramp(10, 10))
    np.testing.assert_array_equal(chunks[2].pcm, np.array([20, 21, 22, 23, 24, 25, 26, 0, 0, 0], np.float32))


def test_chunk_blocks_one_big_block_and_exact_multiple_without_tail():
    chunks = _chunks([_ramp(30)])
    assert [(c.index, c.n_samples, c.last) for c in chunks] == [(0, 10, False), (1, 10, False), (2, 10, True)]
    np.testing.assert_array_equal(chunks[2].pcm, _ramp(10, 20))
    # min_chunk_seconds 0: still no empty tail after an exact multiple
    chunks = _chunks([_ramp(20)], min_chunk_seconds=0)
    assert [(c.index, c.n_samples, c.last) for c in chunks] == [(0, 10, False), (1, 10, True)]


def test_chunk_blocks_min_chunk_rule_at_its_boundary():
    # 0.5 s at 10 Hz = 5 samples: a 5-sample tail is kept, a 4-sample one dropped
    kept = _chunks([_ramp(15)])
    assert [(c.index, c.n_samples, c.last) for c in kept] == [(0, 10, False), (1, 5, True)]
    np.testing.assert_array_equal(kept[1].pcm, np.array([10, 11, 12, 13, 14, 0, 0, 0, 0, 0], np.float32))
    dropped = _chunks([_ramp(14)])
    assert [(c.index, c.n_samples, c.last) for c in dropped] == [(0, 10, True)]
    np.testing.assert_array_equal(dropped[0].pcm, _ramp(10))
    # min 0: a single sample past the chunk is a chunk of its own
    one = _chunks([_ramp(11)], min_chunk_seconds=0)
    assert [(c.index, c.n_samples, c.last) for c in one] == [(0, 10, False), (1, 1, True)]
    assert one[1].pcm[0] == 10 and not one[1].pcm[1:].any()
    # a song of only a tail of at least the minimum is one padded chunk
    only = _chunks([_ramp(6, 1)])
    assert [(c.index, c.n_samples, c.last) for c in only] == [(0, 6, True)]
    np.testing.assert_array_equal(only[0].pcm, np.array([1, 2, 3, 4, 5, 6, 0, 0, 0, 0], np.float32))


def test_chunk_blocks_short_song_is_an_error_with_its_length():
    with pytest.raises(DecodeError) as e:
        _chunks([_ramp(3)], min_chunk_seconds=0.45)
    assert str(e.value) == (
        "the audio is 0.30 s long, shorter than the minimum of 0.45 s (GENRE_MIN_CHUNK_SECONDS)"
    )
    with pytest.raises(DecodeError, match=r"^the audio is 0\.00 s long, shorter than the minimum of 0 s "):
        _chunks([], min_chunk_seconds=0)


def test_chunk_blocks_holds_a_chunk_back_until_the_next_one_is_complete():
    def blocks():
        yield _ramp(10)
        yield _ramp(10, 10)
        raise DecodeError("truncated")

    got = []
    with pytest.raises(DecodeError, match="truncated"):
        for c in chunk_blocks(blocks(), TINY, min_chunk_seconds=0.5):
            got.append(c)
    assert [c.index for c in got] == [0]  # chunk 1, which would have been the last, never came
    # chunks do not share memory with the buffer that is refilled
    chunks = _chunks([_ramp(10), _ramp(10, 10), _ramp(10, 20)])
    np.testing.assert_array_equal(chunks[0].pcm, _ramp(10))
    np.testing.assert_array_equal(chunks[1].pcm, _ramp(10, 10))


def test_chunk_blocks_default_spec_and_minimum():
    sr = SPEC.sample_rate
    blocks = [np.zeros(SPEC.chunk_samples + 10 * sr, np.float32)]
    chunks = list(chunk_blocks(iter(blocks)))
    assert [(c.index, c.n_samples, c.last) for c in chunks] == [(0, SPEC.chunk_samples, False), (1, 10 * sr, True)]
    blocks = [np.zeros(SPEC.chunk_samples + 10 * sr - 1, np.float32)]
    assert [(c.index, c.last) for c in chunk_blocks(iter(blocks))] == [(0, True)]


def test_scrub_removes_the_path_and_surrounding_space():
    assert _scrub("  /data/in/x y.mp3: Invalid data found  \n", "/data/in/x y.mp3") == "the file: Invalid data found"
    from pathlib import Path
    assert _scrub("Error in /a/b.flac and /a/b.flac", Path("/a/b.flac")) == "Error in the file and the file"


def _info(duration, codec="flac"):
    return AudioInfo(sample_rate=10, channels=1, duration=duration, codec=codec)


def test_check_complete_tolerance_is_half_a_second_or_one_percent():
    _check_complete(_info(10.0), 9.5, [])  # tolerance max(0.5, 0.1) = 0.5: exactly at it is fine
    with pytest.raises(DecodeError) as e:
        _check_complete(_info(10.0), 9.49, [])
    assert str(e.value) == (
        "the file is truncated or damaged: it declares 10.0 s of audio but only 9.5 s could be decoded"
    )
    _check_complete(_info(200.0), 198.0, [])  # tolerance max(0.5, 2.0) = 2.0
    with pytest.raises(DecodeError, match="declares 200.0 s of audio but only 197.9 s"):
        _check_complete(_info(200.0), 197.9, [])
    _check_complete(_info(200.0), 250.0, [])  # longer than declared is not truncation
    with pytest.raises(DecodeError, match=r"declares 1\.0 s of audio but only 0\.0 s could be decoded$"):
        _check_complete(_info(1.0), 0.0, [])


def test_check_complete_only_trusts_exact_lengths_or_reported_errors():
    for codec in ("flac", "pcm_s16le", "pcm_f32le", "alac", "wavpack", "tta"):
        with pytest.raises(DecodeError):
            _check_complete(_info(60.0, codec), 30.0, [])
    for codec in ("mp3", "aac", "vorbis", "opus", ""):
        _check_complete(_info(60.0, codec), 30.0, [])  # an estimate proves nothing
    with pytest.raises(DecodeError) as e:
        _check_complete(_info(60.0, "mp3"), 30.0, ["first", "the file: invalid frame"])
    assert str(e.value) == (
        "the file is truncated or damaged: it declares 60.0 s of audio but only 30.0 s could be decoded "
        "(ffmpeg: the file: invalid frame)"
    )
    _check_complete(_info(60.0, "mp3"), 59.5, ["noise"])  # errors but complete
    _check_complete(_info(None), 0.0, ["error"])  # no declared length
    _check_complete(_info(0.0), 0.0, ["error"])


def test_check_exit_reports_ffmpeg_failures_without_the_path():
    info = _info(2.0)
    with pytest.raises(DecodeError) as e:
        _check_exit(1, b"warning at /s/x.flac\nsecond\n/s/x.flac: Invalid data found\n\n", "/s/x.flac", info, 20, 10)
    assert str(e.value) == "ffmpeg could not decode the file: the file: Invalid data found"
    with pytest.raises(DecodeError) as e:
        _check_exit(69, b"", "/s/x.flac", info, 20, 10)
    assert str(e.value) == "ffmpeg could not decode the file: exit status 69"
    with pytest.raises(DecodeError) as e:
        _check_exit(0, b"", "/s/x.flac", info, 0, 10)
    assert str(e.value) == "the file holds no audio samples"
    _check_exit(0, b"", "/s/x.flac", info, 15, 10)  # 1.5 s of 2.0: within the 0.5 s tolerance
    with pytest.raises(DecodeError, match=r"declares 2\.0 s of audio but only 1\.4 s could be decoded$"):
        _check_exit(0, b"", "/s/x.flac", info, 14, 10)
    with pytest.raises(DecodeError, match=r"only 1\.9 s could be decoded \(ffmpeg: bad \xff?"):
        _check_exit(0, b"  bad \xff /s/x.mp3  \n", "/s/x.mp3", _info(3.0, "mp3"), 19, 10)


def _probe_json(stream=None, fmt=None):
    import json
    d = {}
    if stream is not None:
        d["streams"] = [stream]
    if fmt is not None:
        d["format"] = fmt
    return json.dumps(d).encode()


def test_parse_probe_reads_the_first_stream():
    out = b'{"streams": [{"sample_rate": "44100", "channels": 2, "codec_name": "flac", "duration": "12.5"},' \
          b' {"sample_rate": "8000", "channels": 1}], "format": {"duration": "99"}}'
    assert _parse_probe(0, out, b"", "f") == AudioInfo(sample_rate=44100, channels=2, duration=12.5, codec="flac")
    # duration from the container when the stream has none; missing codec name is ""
    info = _parse_probe(0, _probe_json({"sample_rate": "1", "channels": "1"}, {"duration": "3.25"}), b"", "f")
    assert info == AudioInfo(sample_rate=1, channels=1, duration=3.25, codec="")
    for stream, fmt, expected in [
        ({"duration": "N/A"}, {"duration": "7"}, None),  # the stream's own "N/A" is taken as is
        ({}, {"duration": "7"}, 7.0), ({}, {}, None), ({}, None, None), ({"duration": "x"}, None, None),
        ({}, {"duration": "N/A"}, None), ({"duration": "0.5"}, {"duration": "7"}, 0.5),
    ]:
        s = {"sample_rate": "8000", "channels": "1", "codec_name": "mp3", **stream}
        info = _parse_probe(0, _probe_json(s, fmt), b"", "f")
        assert info.duration == expected, (stream, fmt)


@pytest.mark.parametrize("stream", [
    {"sample_rate": "0", "channels": "2"}, {"sample_rate": "44100", "channels": "0"}, {"channels": "2"},
    {"sample_rate": "44100"}, {"sample_rate": "abc", "channels": "2"}, {"sample_rate": "44100", "channels": "x"},
    {"sample_rate": "-1", "channels": "2"}, {"sample_rate": "44100", "channels": "-2"},
])
def test_parse_probe_refuses_streams_without_rate_or_channels(stream):
    with pytest.raises(DecodeError) as e:
        _parse_probe(0, _probe_json(stream), b"", "f")
    assert str(e.value) == "the audio stream has no valid sample rate or channel count"


def test_parse_probe_errors_say_why_without_the_path():
    with pytest.raises(DecodeError) as e:
        _parse_probe(1, b"", b"first\n/in/a.mp3: Invalid data found when processing input\n", "/in/a.mp3")
    assert str(e.value) == "not a readable audio file (the file: Invalid data found when processing input)"
    with pytest.raises(DecodeError) as e:
        _parse_probe(1, b"", b"\xff\xfe bad \xc3\n", "f")  # not UTF-8: replaced, not an exception
    assert str(e.value) == "not a readable audio file (\ufffd\ufffd bad \ufffd)"
    with pytest.raises(DecodeError) as e:
        _parse_probe(0, b'{"streams": []}', b"", "f")
    assert str(e.value) == "not a readable audio file (no audio stream found)"
    with pytest.raises(DecodeError, match=r"\(no audio stream found\)"):
        _parse_probe(0, b"not json", b"  \n", "f")
    with pytest.raises(DecodeError, match=r"\(no audio stream found\)"):
        _parse_probe(0, b"", b"", "f")
    with pytest.raises(DecodeError, match=r"\(broken\)"):  # a good answer with a failing exit status
        _parse_probe(1, _probe_json({"sample_rate": "8000", "channels": "1"}), b"broken", "f")


def test_probe_refuses_missing_and_empty_files_and_times_out(tmp_path):
    with pytest.raises(DecodeError) as e:
        probe(tmp_path / "nope.mp3")
    assert str(e.value) == f"no such file: {tmp_path / 'nope.mp3'}"
    with pytest.raises(DecodeError, match="no such file"):
        probe(tmp_path)  # a directory
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(DecodeError) as e:
        probe(tmp_path / "empty.wav")
    assert str(e.value) == "the file is empty"
    (tmp_path / "x.wav").write_bytes(b"RIFF" + b"\0" * 100)
    with pytest.raises(DecodeError) as e:
        probe(tmp_path / "x.wav", timeout_s=1e-6)
    assert str(e.value) == "ffprobe took longer than 1e-06 s"


def test_ffmpeg_command_mixes_and_resamples_only_when_needed():
    tail = ["-f", "f32le", "-acodec", "pcm_f32le", "-"]
    head = ["ff", "-nostdin", "-v", "error", "-i", "/a b.wav", "-map", "0:a:0", "-vn", "-sn", "-dn"]
    stereo = AudioInfo(sample_rate=44100, channels=2, duration=1.0, codec="flac")
    assert _ffmpeg_command("ff", "/a b.wav", stereo, 44100) == (head + tail, 2)
    assert _ffmpeg_command("ff", "/a b.wav", stereo, 22050) == (
        head + ["-af", "pan=mono|c0=0.5*c0+0.5*c1", "-ar", "22050"] + tail, 1)
    mono = AudioInfo(sample_rate=44100, channels=1, duration=1.0, codec="flac")
    assert _ffmpeg_command("ff", "/a b.wav", mono, 22050) == (head + ["-ar", "22050"] + tail, 1)
    surround = AudioInfo(sample_rate=48000, channels=6, duration=1.0, codec="ac3")
    assert _ffmpeg_command("ff", "/a b.wav", surround, 22050) == (head + ["-ar", "22050"] + tail, 6)


def _reader(data, piece):
    """A read(n) that returns at most `piece` bytes at a time, recording the sizes asked for."""
    f = io.BytesIO(data)
    asked = []

    def read(n):
        asked.append(n)
        return f.read(min(n, piece))

    return read, asked


def test_pcm_blocks_mixes_channels_as_float32_mean():
    frames = np.array([[1.0, 0.5], [-1.0, 0.25], [0.1, 0.2], [3.0, -3.0], [0.5, 0.5]], np.float32)
    read, asked = _reader(frames.tobytes(), 10**6)
    blocks = list(_pcm_blocks(read, 2, 2, None, None, lambda: False))
    assert [len(b) for b in blocks] == [2, 2, 1]
    assert asked == [16, 16, 16, 16]  # 2 frames x 2 channels x 4 bytes, until b""
    got = np.concatenate(blocks)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, (frames[:, 0] + frames[:, 1]) / np.float32(2))
    np.testing.assert_array_equal(got[:2], np.array([0.75, -0.375], np.float32))
    assert all(b.flags.writeable for b in blocks)


def test_pcm_blocks_reassembles_frames_split_across_reads():
    frames = np.arange(12, dtype=np.float32).reshape(4, 3)
    read, _ = _reader(frames.tobytes(), 5)  # 5 bytes at a time: frames are 12 bytes
    blocks = list(_pcm_blocks(read, 3, 100, None, None, lambda: False))
    assert [b.tolist() for b in blocks] == [[1], [4], [7], [10]]  # one frame completes per 12 bytes, no empty blocks
    mono = np.array([0.5, -0.25, 1.0], np.float32)
    read, asked = _reader(mono.tobytes() + b"\1\2", 3)  # a partial frame at the end is dropped
    blocks = list(_pcm_blocks(read, 1, 2, None, None, lambda: False))
    np.testing.assert_array_equal(np.concatenate(blocks), mono)
    assert set(asked) == {8} and all(b.flags.writeable for b in blocks)
    odd = np.array([-0.0, np.nan, 1e-45, -3.5], np.float32)  # mono passes through bit for bit
    read, _ = _reader(odd.tobytes(), 10**6)
    assert np.concatenate(list(_pcm_blocks(read, 1, 3, None, None, lambda: False))).tobytes() == odd.tobytes()


def test_pcm_blocks_limit_and_stop():
    mono = np.zeros(10, np.float32).tobytes()
    read, _ = _reader(mono, 10**6)
    assert sum(len(b) for b in _pcm_blocks(read, 1, 4, 10, 1.0, lambda: False)) == 10  # exactly at the limit
    read, _ = _reader(mono, 10**6)
    got = []
    with pytest.raises(DecodeError) as e:
        for b in _pcm_blocks(read, 1, 4, 9, 0.9, lambda: False):
            got.append(len(b))
    assert str(e.value) == "decoded audio is longer than the limit of 0.9 s (GENRE_MAX_DECODED_SECONDS)"
    assert got == [4, 4]  # the block that crossed the limit is not yielded
    read, asked = _reader(mono, 10**6)
    assert list(_pcm_blocks(read, 1, 4, None, None, lambda: True)) == [] and len(asked) == 1


def _fake_probe(info, calls=None):
    def fake(path, timeout_s=30.0):
        if calls is not None:
            calls.append((str(path), timeout_s))
        return info
    return fake


def test_iter_mono_blocks_refuses_a_declared_length_over_the_limit(monkeypatch):
    calls = []
    monkeypatch.setattr(audio, "probe", _fake_probe(AudioInfo(8000, 1, 95.4, "flac"), calls))
    with pytest.raises(DecodeError) as e:
        next(audio.iter_mono_blocks("/x.flac", timeout_s=5, max_seconds=90))
    assert str(e.value) == (
        "the file declares 95 s of audio, longer than the limit of 90 s (GENRE_MAX_DECODED_SECONDS)"
    )
    assert calls == [("/x.flac", 5)]
    with pytest.raises(DecodeError, match="declares 95 s"):
        next(audio.iter_mono_blocks("/x.flac", max_seconds=95.3))
    assert calls[-1] == ("/x.flac", 30.0)  # the probe's own limit


def _fake_ffmpeg(monkeypatch, script, info=AudioInfo(10, 1, None, "mp3")):
    """iter_mono_blocks with a probe answer and a stand-in for ffmpeg (a Python one-liner)."""
    monkeypatch.setattr(audio, "probe", _fake_probe(info))
    seen = []

    def command(ffmpeg, path, info_, rate):
        seen.append((path, info_, rate))
        return [sys.executable, "-c", script], info_.channels

    monkeypatch.setattr(audio, "_ffmpeg_command", command)
    return seen


WRITE = "import sys, struct; sys.stdout.buffer.write(struct.pack('<{n}f', *{values})); sys.stdout.flush(); "


def test_iter_mono_blocks_streams_what_the_decoder_writes(monkeypatch):
    seen = _fake_ffmpeg(monkeypatch, WRITE.format(n=5, values=[1, 2, 3, 4, 5]))
    blocks = list(audio.iter_mono_blocks("/in.mp3", block_frames=2))
    assert [b.tolist() for b in blocks] == [[1, 2], [3, 4], [5]]
    assert seen == [("/in.mp3", AudioInfo(10, 1, None, "mp3"), 10)]  # the file's own rate
    list(audio.iter_mono_blocks("/in.mp3", 7, max_seconds=1))
    assert seen[-1][2] == 7
    info = AudioInfo(10, 1, 0.5, "pcm_s16le")
    _fake_ffmpeg(monkeypatch, WRITE.format(n=5, values=[0] * 5), info)
    assert sum(len(b) for b in audio.iter_mono_blocks("/in.wav", max_seconds=0.5)) == 5  # at the limits
    _fake_ffmpeg(monkeypatch, WRITE.format(n=5, values=[0] * 5), AudioInfo(10, 1, None, "pcm_s16le"))
    with pytest.raises(DecodeError, match=r"decoded audio is longer than the limit of 0\.4 s"):
        list(audio.iter_mono_blocks("/in.wav", max_seconds=0.4, block_frames=2))  # 4 frames allowed
    _fake_ffmpeg(monkeypatch, WRITE.format(n=5, values=[0] * 5), AudioInfo(10, 1, 1.2, "pcm_s16le"))
    with pytest.raises(DecodeError, match=r"declares 1\.2 s of audio but only 0\.5 s"):
        list(audio.iter_mono_blocks("/in.wav"))


def test_iter_mono_blocks_reports_the_decoder_failure(monkeypatch):
    script = WRITE.format(n=1, values=[0]) + "sys.stderr.write('/in/a b.mp3: bad frame\\n'); sys.exit(3)"
    _fake_ffmpeg(monkeypatch, script)
    with pytest.raises(DecodeError) as e:
        list(audio.iter_mono_blocks("/in/a b.mp3"))
    assert str(e.value) == "ffmpeg could not decode the file: the file: bad frame"
    _fake_ffmpeg(monkeypatch, "pass")
    with pytest.raises(DecodeError) as e:
        list(audio.iter_mono_blocks("/in/a b.mp3"))
    assert str(e.value) == "the file holds no audio samples"
    # only the first 64 KiB of its messages are read
    _fake_ffmpeg(monkeypatch, "import sys; sys.stderr.write('abc' * 30000 + '\\nLAST\\n'); sys.exit(1)")
    with pytest.raises(DecodeError) as e:
        list(audio.iter_mono_blocks("/in/a b.mp3"))
    assert str(e.value) == "ffmpeg could not decode the file: " + ("abc" * 30000)[:65536]


def test_iter_mono_blocks_stops_the_decoder_when_the_reader_stops(monkeypatch):
    import threading
    import time
    _fake_ffmpeg(monkeypatch, WRITE.format(n=2, values=[1, 2]) + "import time; time.sleep(30)")
    timers = []
    real_timer = threading.Timer

    def timer(interval, fn):
        t = real_timer(interval, fn)
        timers.append((interval, t))
        return t

    monkeypatch.setattr(audio.threading, "Timer", timer)
    gen = audio.iter_mono_blocks("/in.mp3", block_frames=1)
    start = time.monotonic()
    assert next(gen).tolist() == [1]
    assert [i for i, _ in timers] == [600.0] and timers[0][1].daemon is True  # never holds the interpreter
    gen.close()  # the decoder, still running, is killed rather than waited for
    assert time.monotonic() - start < 5
    assert not timers[0][1].is_alive()


def test_iter_mono_blocks_decoder_never_reads_our_stdin(monkeypatch):
    import os
    script = ("import os, sys, struct; a = os.fstat(0); b = os.stat(os.devnull); "
              "sys.stdout.buffer.write(struct.pack('<f', 1.0)); "
              "sys.exit(0 if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) else 7)")
    _fake_ffmpeg(monkeypatch, script)
    saved = os.dup(0)
    r, w = os.pipe()
    try:
        os.dup2(r, 0)  # our stdin is a pipe: the decoder must get /dev/null, not it
        assert [b.tolist() for b in audio.iter_mono_blocks("/in.mp3")] == [[1.0]]
    finally:
        os.dup2(saved, 0)
        for fd in (saved, r, w):
            os.close(fd)


def test_tool_says_how_to_install_ffmpeg(monkeypatch):
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    with pytest.raises(DecodeError) as e:
        audio._tool("ffprobe")
    assert str(e.value) == "ffprobe is not installed; install ffmpeg (e.g. apt-get install ffmpeg)"
    monkeypatch.setattr(audio.shutil, "which", lambda name: "/opt/bin/" + name)
    assert audio._tool("ffmpeg") == "/opt/bin/ffmpeg"


def test_probe_runs_ffprobe_with_its_default_limit(monkeypatch, tmp_path):
    import subprocess
    calls = []

    def run(cmd, **kw):
        calls.append((cmd, kw))
        return subprocess.CompletedProcess(cmd, 0, b'{"streams": [{"sample_rate": "8000", "channels": 1}]}', b"")

    monkeypatch.setattr(audio.subprocess, "run", run)
    monkeypatch.setattr(audio, "_tool", lambda name: "/bin/" + name)
    path = tmp_path / "p.wav"
    path.write_bytes(b"RIFF")
    assert probe(path) == AudioInfo(8000, 1, None, "")
    cmd, kw = calls[0]
    assert cmd[0] == "/bin/ffprobe" and cmd[-2:] == ["--", str(path)]
    assert kw["timeout"] == 30.0 and kw["capture_output"] is True


def test_iter_mono_blocks_times_out(monkeypatch):
    _fake_ffmpeg(monkeypatch, WRITE.format(n=1, values=[0]) + "import time; time.sleep(30)")
    start = __import__("time").monotonic()
    with pytest.raises(DecodeError) as e:
        list(audio.iter_mono_blocks("/in.mp3", timeout_s=0.3))
    assert str(e.value) == "decoding took longer than 0.3 s (GENRE_DECODE_TIMEOUT_S)"
    assert __import__("time").monotonic() - start < 5


def test_decode_file_and_chunk_song_pass_their_limits_on(monkeypatch):
    calls = []

    def fake_blocks(path, sample_rate=None, *, timeout_s=600.0, max_seconds=None, block_frames=0):
        calls.append((str(path), sample_rate, timeout_s, max_seconds))
        yield np.array([1, 2], np.float32)
        yield np.array([3], np.float32)

    monkeypatch.setattr(audio, "iter_mono_blocks", fake_blocks)
    monkeypatch.setattr(audio, "probe", _fake_probe(AudioInfo(8000, 2, 1.0, "flac")))
    pcm, rate = audio.decode_file("/a.flac", timeout_s=7, max_seconds=9)
    assert pcm.tolist() == [1, 2, 3] and rate == 8000 and calls[-1] == ("/a.flac", 8000, 7, 9)
    pcm, rate = audio.decode_file("/a.flac", 100)
    assert rate == 100 and calls[-1] == ("/a.flac", 100, 600.0, None)
    tiny = FeatureSpec(sample_rate=2, chunk_seconds=1.0)
    chunks = list(audio.chunk_song("/a.flac", tiny, min_chunk_seconds=0.5, timeout_s=3, max_seconds=4))
    assert calls[-1] == ("/a.flac", 2, 3, 4)
    got = [(c.index, c.n_samples, c.last, c.pcm.tolist()) for c in chunks]
    assert got == [(0, 2, False, [1, 2]), (1, 1, True, [3, 0])]
    with pytest.raises(DecodeError, match=r"^the audio is 1\.50 s long, shorter than the minimum of 2 s"):
        list(audio.chunk_song("/a.flac", FeatureSpec(sample_rate=2, chunk_seconds=2.0), min_chunk_seconds=2))
    assert calls[-1] == ("/a.flac", 2, 600.0, None)
    assert isinstance(chunks[0], SongChunk)
    # the default minimum is 10 s of the default spec
    sr = SPEC.sample_rate
    blocks = [np.zeros(SPEC.chunk_samples, np.float32), np.ones(10 * sr, np.float32)]
    monkeypatch.setattr(audio, "iter_mono_blocks", lambda *a, **k: iter(blocks))
    assert [(c.index, c.n_samples) for c in audio.chunk_song("/a.flac")] == [(0, SPEC.chunk_samples), (1, 10 * sr)]
    blocks[1] = blocks[1][1:]
    assert [(c.index, c.last) for c in audio.chunk_song("/a.flac")] == [(0, True)]
