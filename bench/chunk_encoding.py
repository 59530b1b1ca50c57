"""Chunk encodings compared: bytes per 30-s chunk, encode/decode CPU, feature error.

    python bench/chunk_encoding.py [--real-per-genre 3] [--render-per-genre 1] [--chunks-per-song 2] [--model DIR]

Chunks are cut as the chunker cuts them (`shared.audio.chunk_song`, float32 at 22,050 Hz)
from a sample of real recordings ($GENRE_CACHE/datasets/emotify/test/<genre>/*.mp3, MP3s
decoded to float32: every mantissa bit is used) and of MIDI renders
($GENRE_CACHE/render/r90/test/<genre>/*, 16-bit WAVs), plus the golden signals when
../shared/golden is there. GENRE_CACHE defaults to the folder `scripts/make-model.sh`
fills (${XDG_CACHE_HOME:-~/.cache}/genre/make-model).

Per candidate: encoded bytes per chunk (median, p90, max, and the median against
today's float32), CPU ms to encode and to decode one chunk (process time, median), and
the worst error of the Vamp features (MFCC, contrast peaks and valleys; the built-in
extractor) of the decoded chunk against those of the float32 chunk, measured as the
golden tests measure it (|a - b| / max(|b|, 1e-7), over every value): separately for the
sources that were 16-bit PCM (renders, golden signals) and for the real MP3s. A
reference row perturbs every sample of the float32 chunk by one unit in the last place
(+-1 ulp at random): on float audio that per-value measure is ill-conditioned (a
coefficient near zero, a valley in near silence), so an encoding is judged there
against float32's own resolution. With --model, the model's chunk probabilities from
the float32 chunks and from the v2-decoded ones (under its own feature spec) are compared:
the largest probability change and how many chunks change their top genre; likewise for
features schema 2 (the log-mel in 16-bit fixed point, `shared/schemas.py`), alone and with
chunks at 18 bits (what docker-compose.yml and k8s/ deploy).
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared import pcm_codec  # noqa: E402
from shared.audio import chunk_song  # noqa: E402
from shared.featurespec import DEFAULT_SPEC  # noqa: E402
from shared.features import extract_features  # noqa: E402

SR = DEFAULT_SPEC.sample_rate
FLOAT32_BYTES = DEFAULT_SPEC.chunk_samples * 4
ABS_FLOOR = 1e-7  # as tests/unit/test_features_golden.py
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genre" / "make-model"


def shuffle_zstd(raw: np.ndarray, level: int = 3) -> bytes:
    import zstandard

    planes = raw.view(np.uint8).reshape(-1, raw.itemsize).T.copy()  # byte planes
    return zstandard.ZstdCompressor(level=level).compress(planes.tobytes())


def unshuffle_zstd(data: bytes, dtype: str, n: int) -> np.ndarray:
    import zstandard

    itemsize = np.dtype(dtype).itemsize
    planes = np.frombuffer(zstandard.ZstdDecompressor().decompress(data, max_output_size=n * itemsize), np.uint8)
    return planes.reshape(itemsize, n).T.copy().view(dtype).reshape(n)


# Each candidate: encode(float32 pcm) -> opaque, size(opaque) -> bytes, decode(opaque) -> float32 pcm.
def c_float32():
    return (lambda x: x.tobytes(), len, lambda b: np.frombuffer(b, np.float32))


def c_float32_zstd():
    return (lambda x: shuffle_zstd(x), len, lambda b: unshuffle_zstd(b, "<f4", DEFAULT_SPEC.chunk_samples))


def c_bfp24(block: int, bits: int = pcm_codec.BITS):
    """v2; below 24 bits the chunker's GENRE_CHUNK_BITS rounding first (same decoder)."""
    if bits == pcm_codec.BITS:
        return (lambda x: pcm_codec.encode(x, SR, block), lambda e: e.nbytes, pcm_codec.decode)
    return (lambda x: pcm_codec.encode(pcm_codec.round_bits(x, bits, block), SR, block), lambda e: e.nbytes,
            pcm_codec.decode)


def c_bfp24_raw():
    def enc(x):
        q, e = pcm_codec.quantise(x)
        return q.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes(), e

    def dec(t):
        b, e = t
        q = np.zeros((len(b) // 3, 4), np.uint8)
        q[:, :3] = np.frombuffer(b, np.uint8).reshape(-1, 3)
        codes = (q.view("<i4").reshape(-1) << 8) >> 8  # sign-extend 24 bits
        return pcm_codec.dequantise(codes, e)

    return enc, lambda t: len(t[0]) + len(t[1]), dec


def c_bfp24_zstd():
    def enc(x):
        q, e = pcm_codec.quantise(x)
        return shuffle_zstd(np.diff(q, prepend=np.int32(0)).astype("<i4")), e

    def dec(t):
        b, e = t
        return pcm_codec.dequantise(np.cumsum(unshuffle_zstd(b, "<i4", DEFAULT_SPEC.chunk_samples), dtype=np.int32), e)

    return enc, lambda t: len(t[0]) + len(t[1]), dec


def c_bfp16():
    import soundfile as sf

    def enc(x):
        q, e = pcm_codec.quantise(x)
        q16 = np.clip(np.rint(q / 256.0), -32768, 32767).astype(np.int16)
        buf = io.BytesIO()
        sf.write(buf, q16, SR, format="FLAC", subtype="PCM_16")
        return buf.getvalue(), e

    def dec(t):
        b, e = t
        y = sf.read(io.BytesIO(b), dtype="float32")[0]
        pcm_codec.scale_in_place(y, e, pcm_codec.BLOCK)
        return y

    return enc, lambda t: len(t[0]) + len(t[1]), dec


CANDIDATES: dict[str, tuple[str, Callable]] = {
    "float32 (today, schema v1)": ("lossless", c_float32),
    "float32, byte-shuffle + zstd-3": ("lossless", c_float32_zstd),
    "int24 BFP (2^e gain per 4096), raw 3 bytes": ("24-bit", c_bfp24_raw),
    "int24 BFP, delta + byte-shuffle + zstd-3": ("24-bit", c_bfp24_zstd),
    "int24 one 2^e gain per chunk, FLAC-5": ("24-bit", lambda: c_bfp24(1 << 20)),
    "int24 BFP (2^e gain per 4096), FLAC-5 [v2]": ("24-bit", lambda: c_bfp24(pcm_codec.BLOCK)),
    "v2 rounded to 22 bits per block (GENRE_CHUNK_BITS=22)": ("22-bit", lambda: c_bfp24(pcm_codec.BLOCK, 22)),
    "v2 rounded to 20 bits per block (GENRE_CHUNK_BITS=20)": ("20-bit", lambda: c_bfp24(pcm_codec.BLOCK, 20)),
    "v2 rounded to 18 bits per block (GENRE_CHUNK_BITS=18)": ("18-bit", lambda: c_bfp24(pcm_codec.BLOCK, 18)),
    "int16 BFP (2^e gain per 4096), FLAC-5": ("16-bit", c_bfp16),
}
MODEL_BITS = (24, 22, 20, 18)
"""The GENRE_CHUNK_BITS settings whose effect on the model's probabilities --model measures."""


def worst_rel(a: dict, b: dict, floor: float = 0.0) -> float:
    """Worst |a - b| / max(|b|, 1e-7) over every value; with `floor`, only over the values
    at least `floor` times the largest |value| of their array in the chunk."""
    w = 0.0
    for k in b:
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        keep = np.abs(y) >= floor * np.max(np.abs(y)) if floor else slice(None)
        if np.any(keep):
            w = max(w, float(np.max(np.abs(x - y)[keep] / np.maximum(np.abs(y)[keep], ABS_FLOOR))))
    return w


FLOOR = 1e-3  # the "above the floor" column: values within 60 dB of their array's largest


def one_ulp(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    step = rng.integers(-1, 2, x.size).astype(np.int32) * (x != 0)
    return (x.view(np.int32) + step).view(np.float32)


def sample_chunks(args) -> list[tuple[str, str, np.ndarray]]:
    cache = Path(os.environ.get("GENRE_CACHE") or DEFAULT_CACHE)
    out = []
    for kind, pattern, per in (("real", "datasets/emotify/test/*/*.mp3", args.real_per_genre),
                               ("16-bit", "render/r90/test/*/*.wav", args.render_per_genre)):
        by_genre: dict[str, list[str]] = {}
        for f in sorted(glob.glob(str(cache / pattern))):
            by_genre.setdefault(Path(f).parent.name, []).append(f)
        for genre, files in sorted(by_genre.items()):
            step = max(1, len(files) // per)
            for f in files[::step][:per]:
                for c in chunk_song(f, DEFAULT_SPEC):
                    out.append((kind, f"{genre}/{Path(f).name}#{c.index}", c.pcm))
                    if c.index + 1 >= args.chunks_per_song:
                        break
    try:
        from shared.reference import golden_dir
        from tests.unit.test_features_golden import read_wav_like_libsndfile

        for name in ("music_22050", "noise_22050", "silence_22050"):
            p = golden_dir() / f"{name}.wav"
            if p.is_file():
                pcm, _ = read_wav_like_libsndfile(p)
                padded = np.zeros(DEFAULT_SPEC.chunk_samples, np.float32)
                padded[: min(pcm.size, padded.size)] = pcm[: padded.size]
                out.append(("16-bit", f"golden/{name}", padded))
    except ImportError:
        pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real-per-genre", type=int, default=3)
    ap.add_argument("--render-per-genre", type=int, default=1)
    ap.add_argument("--chunks-per-song", type=int, default=2)
    ap.add_argument("--model", help="also compare this model's predictions on float32 and v2-decoded chunks")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    chunks = sample_chunks(args)
    kinds = {k: sum(1 for c in chunks if c[0] == k) for k in ("real", "16-bit")}
    print(f"{len(chunks)} chunks of 30 s: {kinds['real']} from real MP3s, {kinds['16-bit']} from 16-bit sources")
    base = [extract_features(x, SR).arrays() for _, _, x in chunks]
    rng = np.random.default_rng(0)
    ulp = {"real": 0.0, "16-bit": 0.0, "floor": 0.0}
    for (kind, _, x), f0 in zip(chunks, base):
        f1 = extract_features(one_ulp(x, rng), SR).arrays()
        ulp[kind] = max(ulp[kind], worst_rel(f1, f0))
        if kind == "real":
            ulp["floor"] = max(ulp["floor"], worst_rel(f1, f0, FLOOR))
    rows = []
    for name, (_, make) in CANDIDATES.items():
        try:
            enc, size, dec = make()
            enc(chunks[0][2])
        except ImportError as exc:
            print(f"skipped {name}: {exc} (pip install zstandard, or the bench extra)")
            continue
        sizes, tenc, tdec = [], [], []
        by_kind: dict[str, list[int]] = {"real": [], "16-bit": []}
        worst = {"real": 0.0, "16-bit": 0.0, "floor": 0.0}
        where = {"real": "", "16-bit": ""}
        for (kind, label, x), f0 in zip(chunks, base):
            t0 = time.process_time()
            e = enc(x)
            t1 = time.process_time()
            y = dec(e)
            t2 = time.process_time()
            sizes.append(size(e))
            by_kind[kind].append(size(e))
            tenc.append(t1 - t0)
            tdec.append(t2 - t1)
            err = floor_err = 0.0
            if not np.array_equal(x, y):
                f1 = extract_features(np.ascontiguousarray(y), SR).arrays()
                err, floor_err = worst_rel(f1, f0), worst_rel(f1, f0, FLOOR)
            if kind == "real":
                worst["floor"] = max(worst["floor"], floor_err)
            if err > worst[kind]:
                worst[kind], where[kind] = err, label
        sizes.sort()
        kmed = {k: statistics.median(v) / 1e6 if v else float("nan") for k, v in by_kind.items()}
        rows.append((name, statistics.median(sizes), kmed, sizes[int(0.9 * (len(sizes) - 1))], sizes[-1],
                     1e3 * statistics.median(tenc), 1e3 * statistics.median(tdec), worst, where, by_kind))
    print()
    print("| encoding | MB/chunk median (vs 2.65) | median real / 16-bit | p90 | max | encode ms | decode ms "
          "| worst feature error, 16-bit sources | worst, real MP3s | real, values >= 1e-3 of max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, med, kmed, p90, mx, te, td, worst, where, _ in rows:
        print(f"| {name} | {med / 1e6:.3f} ({med / FLOAT32_BYTES:.2f}) | {kmed['real']:.3f} / {kmed['16-bit']:.3f} "
              f"| {p90 / 1e6:.3f} | {mx / 1e6:.3f} "
              f"| {te:.1f} | {td:.1f} | {worst['16-bit']:.2g} | {worst['real']:.2g} | {worst['floor']:.2g} |")
    print(f"| reference: float32 +-1 ulp per sample | | | | | | | {ulp['16-bit']:.2g} | {ulp['real']:.2g} "
          f"| {ulp['floor']:.2g} |")
    print()
    print("Bytes per chunk by source, MB (share of float32's 2.65): p10 / median / p90 / max")
    print("| encoding | real MP3s | 16-bit sources |")
    print("| --- | --- | --- |")
    for name, *_, spread in rows:
        cells = []
        for kind in ("real", "16-bit"):
            v = sorted(spread[kind])
            q = [v[int(f * (len(v) - 1))] for f in (0.1, 0.5, 0.9, 1.0)] if v else []
            cells.append(" / ".join(f"{b / 1e6:.3f}" for b in q) + (f" ({q[1] / FLOAT32_BYTES:.2f})" if q else ""))
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    print()
    for name, *_, worst, where, _ in rows:
        if worst["real"] or worst["16-bit"]:
            print(f"worst chunks, {name}: 16-bit {where['16-bit'] or '-'}, real {where['real'] or '-'}")
    print("\nerror 0 = the decoded chunk is bit-identical to the float32 chunk; "
          "ms are process CPU time, median per chunk")
    if args.model:
        compare_model(args.model, chunks)
    return 0


def compare_model(path: str, chunks: list[tuple[str, str, np.ndarray]]) -> None:
    from shared.featurespec import ChunkFeatures
    from shared.features import extract_chunk
    from shared.model import ModelArtifact
    from shared.schemas import Features, decode

    model = ModelArtifact.load(path)

    def wire(f: ChunkFeatures, schema: int) -> ChunkFeatures:
        """What the classifier decodes from a features record of `schema`."""
        msg = Features(song_id="x", filename="x", index=0, last=False, spec_id=model.spec.id, arrays=f.arrays())
        return ChunkFeatures(**decode(msg.encode(schema), Features).arrays)

    def features(pcms: list[np.ndarray]) -> list[ChunkFeatures]:
        return [extract_chunk(x, model.spec, extract_features) for x in pcms]

    def probabilities(feats: list[ChunkFeatures], features_schema: int = 1) -> np.ndarray:
        feats = [wire(f, features_schema) for f in feats]
        return np.concatenate([model.predict(feats[i : i + 16]) for i in range(0, len(feats), 16)])

    def report(p1: np.ndarray, what: str) -> None:
        for kind in ("real", "16-bit"):
            idx = [i for i, c in enumerate(chunks) if c[0] == kind]
            if not idx:
                continue
            d = float(np.max(np.abs(p1[idx] - p0[idx])))
            flips = int(np.sum(np.argmax(p1[idx], 1) != np.argmax(p0[idx], 1)))
            print(f"model {model.name}, {what}, on {kind} chunks: largest probability change "
                  f"{d:.2g}, top genre changed on {flips} of {len(idx)} chunks")

    exact = features([x for _, _, x in chunks])
    p0 = probabilities(exact)
    at_18_bits: list[ChunkFeatures] = []  # as compose and k8s deploy the chunker, reused below
    for bits in MODEL_BITS:
        rounded = features([pcm_codec.decode(pcm_codec.encode(pcm_codec.round_bits(x, bits), SR)) for _, _, x in chunks])
        at_18_bits = rounded if bits == 18 else at_18_bits
        report(probabilities(rounded), f"v2 at {bits} bits")
    if model.spec.version < 2:
        return  # no log-mel: features schema 2 writes the same bytes
    report(probabilities(exact, 2), "features schema 2 (the log-mel in 16 bits)")
    report(probabilities(at_18_bits, 2), "chunk v2 at 18 bits and features schema 2 (compose, k8s)")


if __name__ == "__main__":
    sys.exit(main())
