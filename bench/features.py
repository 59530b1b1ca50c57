"""How fast is the built-in extractor?

    python bench/features.py [--runs 30] [--skip-audio]

Every contender runs single-threaded in this one process (BLAS pinned to 1 thread with
threadpoolctl, scipy.fft with workers=1; the settings are printed), on the same 30-second
chunk at 22 050 Hz (the golden music WAV, or a generated one if it is absent), after a
warm-up, interleaved round by round so that load from other processes hits all of them
alike; each figure is the median over --runs rounds.

Contenders:
- floor f64: bare scipy.fft.rfft of the windowed frames of both frame sets (2048/1024 and
  1024/512), in double precision as the plugins' host computes them, nothing else (the
  frames are windowed before the timing);
- floor f32: the same in single precision (what scipy.fft does with float32 frames; too
  imprecise for the contract, which needs the double spectra, but the stricter floor);
- numpy f64: numpy.fft.rfft of the same frames;
- builtin: shared.features.extract_features, all three outputs (its FFT: FFTW through
  pyFFTW, single-threaded plans, when installed; also timed on scipy's pocketfft);
- librosa: MFCC(20) + spectral contrast on the same frame sets (and with librosa's defaults);
- essentia: standard-mode MFCC + SpectralContrast, frame by frame from Python.
librosa and essentia are optional (pip install librosa essentia), never runtime deps.

Then: decode + chunking of a 4-minute MP3 against a bare ffmpeg decode of the same file to
PCM, and the peak RSS of chunking a 60-minute file against a 10-minute one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.fft
from threadpoolctl import threadpool_info, threadpool_limits

import shared.features as features_mod
from shared.features import (
    CONTRAST_BLOCK,
    CONTRAST_STEP,
    MFCC_BLOCK,
    MFCC_STEP,
    _FrameFFT,
    extract_features,
    fft_backend,
    periodic_hann,
)
from shared.reference import golden_dir

SR = 22050
CHUNK = 30 * SR


def load_chunk() -> tuple[np.ndarray, str]:
    path = golden_dir() / "music_22050.wav"
    if path.is_file():
        with wave.open(str(path)) as w:
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return (data.astype(np.float32) / np.float32(32768.0))[:CHUNK], str(path)
    rng = np.random.RandomState(0)
    t = np.arange(CHUNK) / SR
    y = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t * (1 + 0.01 * np.sin(t)))
    y += 0.05 * rng.randn(CHUNK) * (np.sin(2 * np.pi * 2 * t) > 0.9)
    return (y / np.abs(y).max() * 0.5).astype(np.float32), "generated (golden WAV absent)"


def centred_frames(x: np.ndarray, block: int, step: int) -> np.ndarray:
    k = (-(-x.size // 1024)) * 1024 // step
    pad = np.zeros((k - 1) * step + block, dtype=np.float32)
    pad[block // 2 : block // 2 + x.size] = x
    return np.lib.stride_tricks.as_strided(pad, (k, block), (step * 4, 4), writeable=False)


def contenders(x: np.ndarray) -> dict[str, Callable[[], object]]:
    w1, w2 = periodic_hann(MFCC_BLOCK), periodic_hann(CONTRAST_BLOCK)
    # The floors time the FFT of the windowed frames and nothing else: the frames are
    # windowed once, here, outside the timing.
    f1 = centred_frames(x, MFCC_BLOCK, MFCC_STEP) * w1
    f2 = centred_frames(x, CONTRAST_BLOCK, CONTRAST_STEP) * w2
    f1s, f2s = f1.astype(np.float32), f2.astype(np.float32)

    def floor64():
        scipy.fft.rfft(f1, workers=1)
        scipy.fft.rfft(f2, workers=1)

    def floor32():
        scipy.fft.rfft(f1s, workers=1)
        scipy.fft.rfft(f2s, workers=1)

    def numpy64():
        np.fft.rfft(f1)
        np.fft.rfft(f2)

    out: dict[str, Callable[[], object]] = {
        "floor f64 (scipy.fft)": floor64,
        "floor f32 (scipy.fft)": floor32,
        "numpy.fft f64": numpy64,
        "builtin": lambda: extract_features(x, SR),
    }
    if fft_backend() != "pocketfft":  # the same code on scipy's FFT, for comparison
        pocket = _FrameFFT("pocketfft")

        def builtin_pocketfft():
            saved = features_mod._FFT
            features_mod._FFT = pocket
            try:
                extract_features(x, SR)
            finally:
                features_mod._FFT = saved

        out["builtin on pocketfft"] = builtin_pocketfft
    try:
        import warnings

        import librosa

        warnings.filterwarnings("ignore", module="librosa")

        def librosa_same_frames():
            librosa.feature.mfcc(y=x, sr=SR, n_mfcc=20, n_fft=MFCC_BLOCK, hop_length=MFCC_STEP)
            librosa.feature.spectral_contrast(y=x, sr=SR, n_fft=CONTRAST_BLOCK, hop_length=CONTRAST_STEP, n_bands=6)

        def librosa_defaults():
            librosa.feature.mfcc(y=x, sr=SR, n_mfcc=20)
            librosa.feature.spectral_contrast(y=x, sr=SR)

        out[f"librosa {librosa.__version__} (same frames)"] = librosa_same_frames
        out["librosa (its defaults)"] = librosa_defaults
    except ImportError:
        print("librosa: not installed (pip install librosa to compare)")
    try:
        import essentia
        import essentia.standard as es

        essentia.log.infoActive = False
        win1, spec1 = es.Windowing(type="hann", size=MFCC_BLOCK), es.Spectrum(size=MFCC_BLOCK)
        mfcc = es.MFCC(inputSize=MFCC_BLOCK // 2 + 1, numberCoefficients=20, sampleRate=SR)
        win2, spec2 = es.Windowing(type="hann", size=CONTRAST_BLOCK), es.Spectrum(size=CONTRAST_BLOCK)
        contrast = es.SpectralContrast(frameSize=CONTRAST_BLOCK, sampleRate=SR, numberBands=7)

        def essentia_run():
            for f in es.FrameGenerator(x, frameSize=MFCC_BLOCK, hopSize=MFCC_STEP, startFromZero=False):
                mfcc(spec1(win1(f)))
            for f in es.FrameGenerator(x, frameSize=CONTRAST_BLOCK, hopSize=CONTRAST_STEP, startFromZero=False):
                contrast(spec2(win2(f)))

        out[f"essentia {essentia.__version__}"] = essentia_run
    except ImportError:
        print("essentia: not installed (pip install essentia to compare)")
    return out


def time_interleaved(funcs: dict[str, Callable[[], object]], runs: int, warmup: int = 3) -> dict[str, float]:
    for f in funcs.values():
        for _ in range(warmup):
            f()
    samples: dict[str, list[float]] = {k: [] for k in funcs}
    for _ in range(runs):
        for k, f in funcs.items():
            t0 = time.perf_counter()
            f()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def ratio_line(label: str, value: float, goal: str, ok: bool) -> str:
    return f"  {label:<34} {value:6.2f}x   goal {goal:<6} {'met' if ok else 'NOT MET'}"


def bench_extractors(runs: int) -> None:
    x, source = load_chunk()
    print(f"chunk: {x.size} samples at {SR} Hz ({x.size / SR:g} s) from {source}")
    funcs = contenders(x)
    with threadpool_limits(limits=1), scipy.fft.set_workers(1):
        print("threads: " + "; ".join(
            f"{i['internal_api']} ({i['user_api']}) num_threads={i['num_threads']}" for i in threadpool_info()
        ) + f"; scipy.fft workers={scipy.fft.get_workers()} (and workers=1 per call); "
          f"builtin FFT: {fft_backend()} (1 thread)")
        print(f"timing: {runs} interleaved rounds after 3 warm-up calls each, medians")
        med = time_interleaved(funcs, runs)
    for k, v in med.items():
        print(f"  {k:<34} {v * 1e3:8.2f} ms")
    b = med["builtin"]
    print("ratios:")
    r = b / med["floor f64 (scipy.fft)"]
    print(ratio_line("builtin / floor f64", r, "<= 1.5", r <= 1.5))
    r = b / med["floor f32 (scipy.fft)"]
    print(ratio_line("builtin / floor f32 (stricter)", r, "<= 1.5", r <= 1.5))
    for k, v in med.items():
        if k.startswith("librosa"):
            r = v / b
            print(ratio_line(f"{k.split(' (')[0]} ({k.split(' (')[1]} / builtin", r, ">= 2", r >= 2))
        if k.startswith("essentia"):
            r = v / b
            print(ratio_line("essentia / builtin", r, ">= 8", r >= 8))


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_song(path: Path, seconds: int, codec: list[str]) -> Path:
    """Synthetic stereo 44.1 kHz music-like audio (tones + pink noise), encoded by ffmpeg."""
    _ffmpeg(
        "-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=44100:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=331:sample_rate=44100:duration={seconds}",
        "-f", "lavfi", "-i", f"anoisesrc=color=pink:sample_rate=44100:amplitude=0.2:duration={seconds}",
        "-filter_complex", "[0][1][2]amix=inputs=3,volume=0.8[m]", "-map", "[m]", "-ac", "2", *codec, str(path),
    )
    return path


def bare_decode(path: Path) -> int:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ar", str(SR),
           "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    n = 0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        while True:
            b = p.stdout.read(1 << 18)
            if not b:
                break
            n += len(b)
    return n


def decode_and_chunk(path: Path) -> int:
    from shared.audio import chunk_song

    return sum(1 for _ in chunk_song(path))


# Peak RSS in KiB: VmHWM of this process's own memory where /proc has it, because Linux
# carries ru_maxrss across fork+exec (a child would report the parent's peak, e.g. the
# 380 MiB of this benchmark with librosa loaded); resource.getrusage elsewhere.
RSS_SCRIPT = """
import resource, sys
def peak():
    try:
        with open('/proc/self/status') as f:
            return int(next(l for l in f if l.startswith('VmHWM:')).split()[1])
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from shared.audio import chunk_song
before = peak()
n = sum(1 for _ in chunk_song(sys.argv[1], max_seconds=None))
print(n, before, peak(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss(path: Path) -> tuple[int, int, int, int]:
    """(chunks, peak RSS after the imports, peak RSS after chunking, ru_maxrss) in KiB, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(path)], capture_output=True, text=True, check=True)
    chunks, before, after, maxrss = out.stdout.split()
    return int(chunks), int(before), int(after), int(maxrss)


def bench_audio(runs: int) -> None:
    if shutil.which("ffmpeg") is None:
        print("audio: ffmpeg not installed, skipped")
        return
    with tempfile.TemporaryDirectory(prefix="genre-bench-") as tmp:
        mp3 = make_song(Path(tmp) / "song4min.mp3", 240, ["-c:a", "libmp3lame", "-b:a", "192k"])
        funcs = {"bare ffmpeg decode to f32 PCM": lambda: bare_decode(mp3), "decode + chunk (chunk_song)": lambda: decode_and_chunk(mp3)}
        med = time_interleaved(funcs, runs, warmup=1)
        print(f"4-minute MP3 (44.1 kHz stereo, 192 kb/s) decoded to {SR} Hz mono, medians of {runs}:")
        for k, v in med.items():
            print(f"  {k:<34} {v * 1e3:8.1f} ms")
        r = med["decode + chunk (chunk_song)"] / med["bare ffmpeg decode to f32 PCM"]
        print(ratio_line("decode+chunk / bare ffmpeg", r, "<= 1.2", r <= 1.2))
        from shared.audio import probe

        p = time_interleaved({"probe": lambda: probe(mp3)}, runs, warmup=1)["probe"]
        print(f"  (of which the ffprobe call in chunk_song: {p * 1e3:.1f} ms)")
        rss = {}
        for minutes in (10, 60):
            f = make_song(Path(tmp) / f"song{minutes}min.flac", minutes * 60, ["-c:a", "flac"])
            rss[minutes] = peak_rss(f)
            f.unlink()
        print("peak RSS of chunking (fresh process; VmHWM, else resource.getrusage ru_maxrss):")
        for minutes, (chunks, before, kib, maxrss) in rss.items():
            print(f"  {minutes:>2}-minute FLAC: {chunks:4d} chunks, peak RSS {kib / 1024:7.1f} MiB "
                  f"({before / 1024:.1f} MiB after the imports, {(kib - before) / 1024:+.1f} MiB for chunking; "
                  f"ru_maxrss {maxrss / 1024:.1f} MiB, inherited across fork+exec)")
        growth = (rss[60][2] - rss[10][2]) / 1024
        print(f"  60-minute minus 10-minute: {growth:+.1f} MiB (independent of length: {abs(growth) < 16})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="timed rounds (>= 20; default 30)")
    ap.add_argument("--audio-runs", type=int, default=9, help="timed rounds of the MP3 decode (default 9)")
    ap.add_argument("--skip-audio", action="store_true", help="only the extractor benchmark")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    bench_extractors(max(args.runs, 20))
    if not args.skip_audio:
        bench_audio(max(args.audio_runs, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
