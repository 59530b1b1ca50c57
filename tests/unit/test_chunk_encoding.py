"""Chunk schema v2: 24-bit block floating point under FLAC (shared/pcm_codec.py).

What must hold: the round trip is bit-exact where it claims to be (24-bit codes; audio
that came from <= 24-bit PCM, as the golden signals and the MIDI renders did); every
sample of float audio is within half a step of its block's gain (silence stays exactly
zero, quiet and clipping-level blocks keep their own scale); v1 float32 chunks still
decode (rolling upgrade); a payload that does not decode is a SchemaError with the reason
(the service makes it a dead letter); and the golden features computed from decoded
chunks are the very values the real sonic-annotator wrote.
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

pytest.importorskip("soundfile")

from services.extractor.__main__ import chunk_features  # noqa: E402
from shared import pcm_codec  # noqa: E402
from shared.featurespec import DEFAULT_SPEC  # noqa: E402
from shared.features import extract_features  # noqa: E402
from shared.metrics import ServiceMetrics  # noqa: E402
from shared.schemas import (  # noqa: E402
    CHUNK_SCHEMA_VERSION,
    MAX_CHUNK_SAMPLES,
    MAX_MESSAGE_BYTES,
    Chunk,
    DeadLetter,
    Features,
    SchemaError,
    decode,
    pack_array,
)
from shared.service import StreamService  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.fixtures.audio import make_song  # noqa: E402

N = DEFAULT_SPEC.chunk_samples
SR = DEFAULT_SPEC.sample_rate
STEP = 2.0 ** -(pcm_codec.BITS - 1)


def chunk(pcm: np.ndarray, **kw) -> Chunk:
    return Chunk(song_id="s", filename="s.flac", index=0, last=True, sample_rate=SR, n_samples=pcm.size, pcm=pcm, **kw)


def roundtrip(x: np.ndarray) -> np.ndarray:
    return pcm_codec.decode(pcm_codec.encode(x, SR))


def bound(x: np.ndarray) -> np.ndarray:
    """Per sample: half a step of its block's gain (a full step where +2^23 was clipped)."""
    e = pcm_codec.block_exponents(x).astype(np.int64)
    return np.repeat(np.ldexp(STEP, e), pcm_codec.BLOCK)[: x.size]


# --- round trip -----------------------------------------------------------------------


def test_24_bit_codes_round_trip_bit_exactly():
    rng = np.random.default_rng(1)
    q = rng.integers(-(1 << 23), 1 << 23, N, dtype=np.int32)
    q[:4096] //= 1 << 12  # a quiet block among loud ones
    q[8192:12288] = 0  # and a silent one
    x = (q.astype(np.float64) * STEP * 4).astype(np.float32)  # |x| < 4: gain 2^2
    codes, e = pcm_codec.quantise(x)
    enc = pcm_codec.encode(x, SR)
    y = pcm_codec.decode(enc)
    assert y.dtype == np.float32 and y.shape == (N,)
    np.testing.assert_array_equal(y, pcm_codec.dequantise(codes, e))  # what the codes say, bit for bit
    np.testing.assert_array_equal(y, x)  # x was 24-bit: nothing lost


@pytest.mark.parametrize("bits", [8, 16, 24])
def test_audio_from_pcm_of_at_most_24_bits_round_trips_bit_exactly(bits):
    rng = np.random.default_rng(bits)
    top = 1 << (bits - 1)
    ints = rng.integers(-top, top, N)
    x = (ints / top).astype(np.float32)  # as libsndfile and ffmpeg read integer PCM
    x[: 54 * pcm_codec.BLOCK] *= np.float32(2.0 ** -9)  # an exact -54 dB passage, in whole blocks
    np.testing.assert_array_equal(roundtrip(x), x)


def test_silence_stays_exact_zero_and_positive():
    x = np.zeros(N, np.float32)
    y = roundtrip(x)
    assert not np.any(y) and not np.any(np.signbit(y))
    enc = pcm_codec.encode(x, SR)
    assert len(enc.data) < 20_000  # FLAC's constant subframes: a few bytes per block


def test_the_encoding_is_deterministic_and_compact_on_music():
    x = make_song("drone", 30.0, seed=3)
    a, b = pcm_codec.encode(x, SR), pcm_codec.encode(x, SR)
    assert a == b
    # a synthetic drone with a noise floor at -44 dB: ~0.55 of float32 (real music and
    # 16-bit sources: see bench/chunk_encoding.py)
    assert a.nbytes < 0.6 * N * 4
    assert len(a.data) <= pcm_codec.max_encoded_bytes(N)


# --- fewer bits per block (GENRE_CHUNK_BITS) ---------------------------------------------


@pytest.mark.parametrize("bits", [16, 18, 20, 23])
def test_rounded_chunks_keep_their_bits_through_the_24_bit_stream_and_shrink(bits):
    x = make_song("drone", 30.0, seed=5)
    r = pcm_codec.round_bits(x, bits)
    assert r.dtype == np.float32 and r.shape == x.shape
    codes, _ = pcm_codec.quantise(x, bits=bits)
    assert not np.any(codes % (1 << (pcm_codec.BITS - bits)))  # zero low bits, FLAC's wasted bits
    enc = pcm_codec.encode(r, SR)
    np.testing.assert_array_equal(pcm_codec.decode(enc), r)  # the unchanged decoder, bit for bit
    step = np.repeat(np.ldexp(1.0, pcm_codec.block_exponents(x).astype(np.int64) - bits), pcm_codec.BLOCK)
    assert np.all(np.abs(r.astype(np.float64) - x) <= step[: x.size])  # half a step of `bits`
    # each bit dropped saves about one bit per sample (N / 8 bytes)
    full = pcm_codec.encode(x, SR).nbytes
    assert enc.nbytes < full - (pcm_codec.BITS - bits) * 0.9 * N / 8


def test_16_bit_audio_is_exact_from_17_bits_up_and_a_full_scale_negative_needs_the_17th():
    rng = np.random.default_rng(7)
    x = (rng.integers(-32767, 32768, N) / 32768).astype(np.float32)  # -32768 only where planted
    x[100] = -1.0  # -32768: that block's peak is 2^0 exactly, so its gain is 2^1
    for bits in (17, 20, 24):
        np.testing.assert_array_equal(pcm_codec.round_bits(x, bits), x)
    y = pcm_codec.round_bits(x, 16)
    assert not np.array_equal(y[: pcm_codec.BLOCK], x[: pcm_codec.BLOCK])  # odd codes lose their last bit
    np.testing.assert_array_equal(y[pcm_codec.BLOCK :], x[pcm_codec.BLOCK :])  # other blocks exact


@pytest.mark.parametrize("bits", [15, 25, 0])
def test_bits_outside_16_to_24_are_refused(bits):
    with pytest.raises(pcm_codec.PcmCodecError, match=f"bits {bits} outside"):
        pcm_codec.round_bits(np.zeros(10, np.float32), bits)


# --- error bound on float audio -------------------------------------------------------


@pytest.mark.parametrize("gain_db", [0.0, -30.0, -90.0, -200.0])
@pytest.mark.parametrize("genre", ["drone", "clicks"])
def test_every_sample_is_within_half_a_step_of_its_blocks_gain(genre, gain_db):
    x = make_song(genre, 30.0, seed=11, gain_db=gain_db)
    y = roundtrip(x)
    err = np.abs(y.astype(np.float64) - x)
    assert np.all(err <= bound(x))
    peak = float(np.max(np.abs(x)))
    assert np.max(err) <= peak * 2.0 ** -23  # relative to the peak, at any level (-200 dB included)


def test_quiet_passages_keep_their_own_resolution():
    """A fade-in at -100 dB beside a 0 dB block: each block is scaled by its own peak, so
    the quiet one keeps 24 bits (one gain for the chunk would round it to zero)."""
    x = make_song("drone", 30.0, seed=4)
    x[: 4 * 4096] *= np.float32(1e-5)
    y = roundtrip(x)
    quiet = slice(0, 4 * 4096)
    assert np.all(y[quiet] != 0) == np.all(x[quiet] != 0)
    rel = np.max(np.abs(y[quiet] - x[quiet])) / np.max(np.abs(x[quiet]))
    assert rel <= 2.0 ** -23


def test_clipping_level_and_over_full_scale_blocks_are_not_clipped():
    x = make_song("clicks", 30.0, seed=6)
    x = np.clip(x * 4, -1, 1)  # hard-clipped at full scale, many samples exactly +-1
    x[5000:5100] = 1.7  # decoded MP3s overshoot 0 dBFS
    x[200_000] = -np.float32(2.0**23)  # absurd but finite: its block gets a gain of 2^24
    y = roundtrip(x)
    assert np.all(np.abs(y.astype(np.float64) - x) <= bound(x))
    full_scale = np.abs(x) == 1
    b = 200_000 // pcm_codec.BLOCK
    full_scale[b * pcm_codec.BLOCK : (b + 1) * pcm_codec.BLOCK] = False  # that block has a step of 2
    assert np.all(y[full_scale] == x[full_scale])  # +-1 is representable: exact
    assert y[200_000] == -(2.0**23)
    assert np.max(np.abs(y[5000:5100] - 1.7)) <= 2.0 ** -22


def test_denormals_tiny_and_a_single_click_in_silence():
    x = np.zeros(N, np.float32)
    x[100] = 1e-30
    x[200:210] = np.float32(1e-42)  # subnormal
    x[300_000] = 0.9
    y = roundtrip(x)
    assert np.all(np.abs(y.astype(np.float64) - x) <= bound(x))
    assert y[100] == pytest.approx(1e-30, rel=2.0**-23)
    assert y[300_000] == pytest.approx(0.9, rel=2.0**-23)


def test_non_finite_samples_are_refused_at_encoding():
    x = np.zeros(N, np.float32)
    x[7] = np.nan
    with pytest.raises(pcm_codec.PcmCodecError, match="NaN or infinite"):
        pcm_codec.encode(x, SR)
    with pytest.raises(SchemaError, match="pcm: pcm has NaN or infinite"):
        chunk(x).encode()


def test_features_of_16_bit_audio_are_bit_identical_through_the_encoding():
    rng = np.random.default_rng(5)
    x = (np.round(make_song("drone", 30.0, seed=2) * 32767 + rng.normal(0, 3, N)) / 32768).astype(np.float32)
    got = extract_features(decode(chunk(x).encode(), Chunk).pcm, SR)
    want = extract_features(x, SR)
    for k, a in want.arrays().items():
        np.testing.assert_array_equal(got.arrays()[k], a)


def test_features_of_float_music_stay_within_the_contract_above_the_24_bit_floor():
    """Float audio is rounded to 24 bits relative to each block's peak: spectral content
    more than ~140 dB below it becomes the quantiser's noise. Contrast peaks (band maxima)
    keep the 1e-4 contract; valleys and MFCC filters made of near-empty bins change more
    (see README "Benchmarks": so does a 1-ulp perturbation of the float32 chunk)."""
    x = make_song("drone", 30.0, seed=8)
    f0 = extract_features(x, SR)
    f1 = extract_features(roundtrip(x), SR)
    rel = np.abs(f1.peaks.astype(np.float64) - f0.peaks) / np.maximum(np.abs(f0.peaks), 1e-7)
    assert np.max(rel) <= 1e-4
    loud = np.abs(f0.valleys) >= 1e-3 * np.max(np.abs(f0.valleys))
    assert np.max(np.abs(f1.valleys - f0.valleys)[loud] / np.abs(f0.valleys)[loud]) <= 1e-3


# --- the chunk message: versions, sizes, corrupt payloads -------------------------------


def test_a_chunk_is_written_as_v2_and_decodes_to_its_float32_samples():
    x = make_song("clicks", 30.0, seed=1)
    raw = chunk(x).encode()
    d = msgpack.unpackb(raw)
    assert d["v"] == CHUNK_SCHEMA_VERSION == 2
    assert set(d["pcm"]) == {"codec", "n", "block", "exponents", "data"} and d["pcm"]["codec"] == "flac-bfp24"
    assert len(raw) < 0.6 * N * 4
    c = decode(raw, Chunk)
    assert c.pcm.dtype == np.float32 and c.pcm.shape == (N,)
    np.testing.assert_array_equal(c.pcm, roundtrip(x))


def test_an_old_v1_float32_chunk_still_decodes_bit_for_bit():
    x = make_song("drone", 30.0, seed=1)
    # exactly what the chunker wrote before schema v2
    old = {"song_id": "s", "filename": "s.flac", "index": 3, "last": False, "sample_rate": SR, "n_samples": N,
           "error": "", "produced_at": 1.0, "chunked_at": 2.0, "pcm": pack_array(x), "v": 1, "type": "chunk"}
    raw = msgpack.packb(old, use_bin_type=True)
    assert raw == Chunk(song_id="s", filename="s.flac", index=3, last=False, sample_rate=SR, n_samples=N, pcm=x,
                        produced_at=1.0, chunked_at=2.0).encode(version=1)
    c = decode(raw, Chunk)
    assert c.index == 3 and not c.last
    np.testing.assert_array_equal(c.pcm, x)


def test_error_chunks_round_trip_in_both_versions():
    for version in (1, 2):
        e = Chunk(song_id="s", filename="s.mp3", index=2, last=True, sample_rate=SR, n_samples=0, error="bad file")
        c = decode(e.encode(version), Chunk)
        assert c.error == "bad file" and c.pcm.size == 0 and c.pcm.dtype == np.float32


def test_unknown_versions_are_refused_with_the_ones_read():
    d = chunk(np.zeros(4096, np.float32)).to_dict()
    for v in (0, 3, True, "2"):
        with pytest.raises(SchemaError, match=r"schema version .* is not supported \(expected 1 or 2\)"):
            decode(msgpack.packb({**d, "v": v}, use_bin_type=True), Chunk)
    with pytest.raises(SchemaError, match="cannot be written"):
        chunk(np.zeros(4, np.float32)).encode(version=3)


def _v2(x: np.ndarray) -> dict:
    return chunk(x).to_dict()


def _bad(d: dict, **pcm) -> bytes:
    return msgpack.packb({**d, "pcm": {**d["pcm"], **pcm}}, use_bin_type=True)


@pytest.mark.parametrize("case,reason", [
    ("flipped", r"pcm: payload is not a readable FLAC stream: .*"),
    ("truncated", r"pcm: payload is not a readable FLAC stream|pcm: payload decodes to"),
    ("not_flac", r"pcm: payload is not a readable FLAC stream: .*Format not recognised"),
    ("wav", r"pcm: payload is WAV/PCM_16 with 1 channels, not mono 24-bit FLAC"),
    ("stereo", r"pcm: payload is FLAC/PCM_24 with 2 channels"),
    ("short", r"pcm: payload declares 4096 samples where the message says 8192"),
    ("exponents", r"pcm: 1 gain exponents for 2 blocks of 8192 samples"),
    ("block", r"pcm: bad gain block 1000"),
    ("codec", r"pcm: codec 'zstd' is not supported"),
    ("keys", r"pcm: expected an encoded pcm map"),
    ("types", r"pcm: n and block must be integers"),
    ("bomb", rf"pcm: {MAX_CHUNK_SAMPLES + 1} samples exceed the {MAX_CHUNK_SAMPLES} a chunk may hold"),
    ("oversized", r"pcm: \d+ encoded bytes exceed the bound for 8192 samples"),
])
def test_a_corrupt_payload_is_a_schema_error_with_the_reason(case, reason):
    import io

    import soundfile as sf

    x = make_song("clicks", 8192 / SR, seed=2)
    d = _v2(x)
    data = d["pcm"]["data"]

    def other(**kw):
        b = io.BytesIO()
        sf.write(b, **kw)
        return b.getvalue()


    raw = {
        "flipped": lambda: _bad(d, data=data[:200] + bytes(b ^ 0x5A for b in data[200:])),
        "truncated": lambda: _bad(d, data=data[: len(data) // 2]),
        "not_flac": lambda: _bad(d, data=b"\x00" * 5000),
        "wav": lambda: _bad(d, data=other(data=np.zeros(8192, np.int16), samplerate=SR, format="WAV",
                                          subtype="PCM_16")),
        "stereo": lambda: _bad(d, data=other(data=np.zeros((8192, 2), np.int32), samplerate=SR, format="FLAC",
                                             subtype="PCM_24")),
        "short": lambda: _bad(d, data=pcm_codec.encode(x[:4096], SR).data),
        "exponents": lambda: _bad(d, exponents=d["pcm"]["exponents"][:1]),
        "block": lambda: _bad(d, block=1000),
        "codec": lambda: _bad(d, codec="zstd"),
        "keys": lambda: msgpack.packb({**d, "pcm": {"data": data}}, use_bin_type=True),
        "types": lambda: _bad(d, n="8192"),
        "bomb": lambda: _bad(d, n=MAX_CHUNK_SAMPLES + 1),
        "oversized": lambda: _bad(d, data=data + b"\x00" * (pcm_codec.max_encoded_bytes(8192) - len(data) + 1)),
    }[case]()
    with pytest.raises(SchemaError, match=reason):
        decode(raw, Chunk)


def test_size_limits_stay_meaningful():
    """The decoded chunk can never be larger than a v1 float32 chunk under the message
    limit, and the largest possible v2 chunk (white noise at full scale: FLAC's verbatim
    fallback) is well under the limit that still admits v1 chunks."""
    assert MAX_CHUNK_SAMPLES * 4 <= MAX_MESSAGE_BYTES
    assert N * 4 + 1024 < MAX_MESSAGE_BYTES  # a v1 chunk during a rolling upgrade
    noise = np.random.default_rng(0).uniform(-1, 1, N).astype(np.float32)
    raw = chunk(noise).encode()
    assert len(raw) <= pcm_codec.max_encoded_bytes(N) + 4096 < MAX_MESSAGE_BYTES
    assert len(raw) < 0.78 * N * 4  # 24 of 32 bits, however random
    too_long = chunk(np.zeros(MAX_CHUNK_SAMPLES + 1, np.float32))
    with pytest.raises(SchemaError, match="samples exceed"):
        decode(too_long.encode(), Chunk)


# --- the extractor during a rolling upgrade ---------------------------------------------


def test_the_extractor_reads_v1_and_v2_and_dead_letters_a_corrupt_payload_with_the_reason():
    from tests.unit.test_service import TP, FakeConsumer, FakeProducer, Rec

    settings = Settings.from_env({})
    svc = StreamService("extractor", settings, "g", settings.topic_chunks, Chunk,
                        lambda c: chunk_features(c, settings, DEFAULT_SPEC, extract_features,
                                                 ServiceMetrics("extractor")),
                        metrics=ServiceMetrics("extractor"))
    x = make_song("drone", 30.0, seed=9)
    v1 = chunk(x).encode(version=1)
    v2 = chunk(x).encode()
    d = msgpack.unpackb(v2)
    corrupt = _bad(d, data=d["pcm"]["data"][:1000] + b"\x00" * (len(d["pcm"]["data"]) - 1000))
    recs = [Rec(TP.topic, TP.partition, 10 + i, b"s", v) for i, v in enumerate([v1, corrupt, v2])]
    producer, consumer = FakeProducer(), FakeConsumer()
    svc._process({TP: recs}, consumer, producer)
    feats = [decode(v, Features) for t, _k, v in producer.sent if t == settings.topic_features]
    dls = [decode(v, DeadLetter) for t, _k, v in producer.sent if t == settings.topic_deadletter]
    assert len(feats) == 2 and not any(f.error for f in feats)
    assert len(dls) == 1 and dls[0].offset == 11
    assert dls[0].reason.startswith("pcm: payload is not a readable FLAC stream")
    assert consumer.commits == [{TP: 13}]
    np.testing.assert_array_equal(feats[0].arrays["peaks"], extract_features(x, SR).peaks)
