"""Compact chunk PCM: 24-bit block floating point under FLAC (chunk schema v2).

Why this encoding (figures: `bench/chunk_encoding.py`, README "Benchmarks"): a 30-s
float32 chunk is 2.65 MB and float32 itself barely compresses losslessly (its low
mantissa bits are noise). So the chunk is quantised to 24-bit integers with a
**power-of-two gain per block** of `BLOCK` samples, and the integers go through FLAC
(libsndfile, via the `soundfile` wheel):

- **Power-of-two gain**: a block whose peak p is below 2^e is stored as
  round(x * 2^(23 - e)), and decoded as q * 2^(e - 23). Multiplying by a power of two
  is exact in float32, so audio that came from 16-bit (or any <= 24-bit) PCM, as every
  golden signal and every MIDI render does, round-trips **bit for bit**; its features
  are the very float32 values the real plugins give.
- **Per block**, not per chunk: the gain follows the block's own peak, so a quiet
  passage (a fade-in, a pianissimo bar) keeps 24 bits relative to itself instead of
  being rounded against the loudest moment of the chunk; digital silence stays exactly
  zero, a clipping-level or > 0 dBFS block is not clipped.
- **Block = FLAC frame**: FLAC predicts within frames of 4,096 samples; gains that only
  change at frame boundaries cost it nothing.

Error bound: |decoded - x| <= 2^(e - 24) <= peak(block) * 2^-23 for every sample (half a
step; a sample rounded up onto the +2^23 code is clipped to 2^23 - 1, a full step).
Rounded to b < 24 bits (`round_bits`, GENRE_CHUNK_BITS): 2^(e - b) <= peak(block) * 2^-(b - 1).

Decoding makes one float32 array (libsndfile converts the 24-bit integers to float32
exactly, q / 2^23) and scales it in place; the encoded bytes are read where they lie.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

CODEC = "flac-bfp24"
BITS = 24
MIN_BITS = 16
"""The fewest significant bits per block a chunk may be rounded to (`round_bits`). From 17
up, audio from 16-bit PCM still round-trips exactly (a block holding -32768/32768 has
gain 2^1, so its 16-bit samples need 17 bits)."""
BLOCK = 4096
"""Samples per gain block; the FLAC frame length of libsndfile's default compression."""
FLAC_LEVEL = 0.625
"""soundfile's compression_level (0..1 onto FLAC's 0..8): 0.625 = FLAC level 5, its default."""
MIN_EXPONENT, MAX_EXPONENT = -150, 130
"""Gain exponents a float32 block can need (its peak is below 2^e); anything else is refused."""
MAX_SAMPLES = 10_000_000


class PcmCodecError(ValueError):
    """Samples that cannot be encoded, or a payload that does not decode; says why."""


@dataclass(frozen=True)
class EncodedPcm:
    n: int  # samples
    block: int  # samples per gain block
    exponents: bytes  # int8 per block: the block's samples are below 2^e
    data: bytes  # a mono 24-bit FLAC stream of the scaled integers

    @property
    def nbytes(self) -> int:
        return len(self.data) + len(self.exponents)


def max_encoded_bytes(n: int, block: int = BLOCK) -> int:
    """A bound on the FLAC stream of n samples: FLAC falls back to verbatim frames, so
    at worst 3 bytes a sample plus frame headers and the stream's metadata."""
    return 3 * n + 64 * (-(-n // block)) + 16384


def block_exponents(x: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """e per block, with every sample of the block below 2^e in magnitude (0 for silence)."""
    n = x.size
    nb = -(-n // block)
    full = n // block
    peaks = np.empty(nb, dtype=np.float32)
    if full:
        np.max(np.abs(x[: full * block].reshape(full, block)), axis=1, out=peaks[:full])
    if nb > full:
        peaks[full] = np.max(np.abs(x[full * block :]))
    if not np.all(np.isfinite(peaks)):
        raise PcmCodecError("pcm has NaN or infinite samples")
    return np.frexp(peaks)[1].astype(np.int16)  # frexp(0) = (0, 0)


def quantise(x: np.ndarray, block: int = BLOCK, bits: int = BITS) -> tuple[np.ndarray, np.ndarray]:
    """(int32 codes of BITS bits, int16 exponent per block) of float32 samples, rounded to
    `bits` significant bits per block: below 24 the codes are multiples of 2^(24 - bits),
    trailing zeros that FLAC stores for free (its "wasted bits"), so the stream shrinks by
    about 1/8 of a float32 chunk per 4 bits and any 24-bit decoder reads it unchanged."""
    if not MIN_BITS <= bits <= BITS:
        raise PcmCodecError(f"bits {bits} outside [{MIN_BITS}, {BITS}]")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise PcmCodecError(f"pcm must be 1-D, got shape {x.shape}")
    if x.size > MAX_SAMPLES:
        raise PcmCodecError(f"{x.size} samples exceed {MAX_SAMPLES}")
    e = block_exponents(x, block)
    if e.size and (e.min() < MIN_EXPONENT or e.max() > MAX_EXPONENT):
        raise PcmCodecError(f"a block's peak needs gain exponent {int(e.max())}, outside [{MIN_EXPONENT}, {MAX_EXPONENT}]")
    shift = np.repeat((bits - 1 - e).astype(np.float64), block)[: x.size]
    q = np.rint(np.ldexp(x.astype(np.float64), shift.astype(np.int32)))
    top = (1 << (bits - 1)) - 1
    np.clip(q, -top - 1, top, out=q)
    return q.astype(np.int32) << (BITS - bits), e


def round_bits(x: np.ndarray, bits: int, block: int = BLOCK) -> np.ndarray:
    """float32 samples rounded to `bits` significant bits per gain block, as `quantise`
    rounds them: what a chunk decodes to when it is encoded after this (bit for bit)."""
    return dequantise(*quantise(x, block, bits), block)


def dequantise(q: np.ndarray, e: np.ndarray, block: int = BLOCK) -> np.ndarray:
    y = q.astype(np.float32) * np.float32(2.0 ** -(BITS - 1))
    scale_in_place(y, e, block)
    return y


def scale_in_place(y: np.ndarray, e: np.ndarray, block: int) -> None:
    """y (codes / 2^23, float32) times 2^e per block, in place: exact (powers of two)."""
    gains = np.ldexp(np.float32(1.0), e.astype(np.int32)).astype(np.float32)
    n = y.size
    full = n // block
    if full:
        view = y[: full * block].reshape(full, block)
        view *= gains[:full, None]
    if full < gains.size:
        y[full * block :] *= gains[full]


def encode(pcm: np.ndarray, sample_rate: int, block: int = BLOCK) -> EncodedPcm:
    import soundfile as sf

    q, e = quantise(pcm, block)
    buf = io.BytesIO()
    # libsndfile's int interface is left-justified: a 24-bit code goes in the top 24 bits.
    sf.write(buf, q << (32 - BITS), sample_rate, format="FLAC", subtype="PCM_24", compression_level=FLAC_LEVEL)
    return EncodedPcm(n=int(q.size), block=block, exponents=e.astype(np.int8).tobytes(), data=buf.getvalue())


def decode(enc: EncodedPcm) -> np.ndarray:
    """float32 samples of an encoded chunk; PcmCodecError says why a payload is bad."""
    import soundfile as sf

    n, block = enc.n, enc.block
    if not 0 <= n <= MAX_SAMPLES:
        raise PcmCodecError(f"bad sample count {n}")
    if block < 256 or block > 1 << 20 or block & (block - 1):
        raise PcmCodecError(f"bad gain block {block} (a power of two in [256, 2^20])")
    nb = -(-n // block)
    if len(enc.exponents) != nb:
        raise PcmCodecError(f"{len(enc.exponents)} gain exponents for {nb} blocks of {n} samples")
    e = np.frombuffer(enc.exponents, dtype=np.int8)
    if len(enc.data) > max_encoded_bytes(n, block):
        raise PcmCodecError(f"{len(enc.data)} encoded bytes exceed the bound for {n} samples")
    try:
        with sf.SoundFile(io.BytesIO(enc.data)) as f:  # BytesIO shares the bytes, no copy
            if f.format != "FLAC" or f.channels != 1 or f.subtype != "PCM_24":
                raise PcmCodecError(f"payload is {f.format}/{f.subtype} with {f.channels} channels, "
                                    "not mono 24-bit FLAC")
            if f.frames != n:
                raise PcmCodecError(f"payload declares {f.frames} samples where the message says {n}")
            y = f.read(n, dtype="float32")  # exactly q / 2^23
            extra = f.read(1, dtype="float32")
    except PcmCodecError:
        raise
    except Exception as exc:  # libsndfile's errors (LibsndfileError, RuntimeError, ...)
        raise PcmCodecError(f"payload is not a readable FLAC stream: {type(exc).__name__}: {exc}") from None
    if y.size != n or extra.size:
        raise PcmCodecError(f"payload decodes to {y.size + extra.size} samples where the message says {n}")
    scale_in_place(y, e, block)
    return y
