"""Decode any audio ffmpeg knows into mono float32 and cut it into sample-accurate chunks.

Decoding streams through an ffmpeg pipe in bounded blocks, so memory does not grow with
the song's length. The mixdown is the float32 mean of the channels, (L+R)/2, the same
formula sonic-annotator uses, so features match the reference host.

Chunk policy: chunks are exactly `spec.chunk_samples` long and start at multiples of
it. A final partial chunk of at least `min_chunk_seconds` is kept and zero-padded at
its END to the full length (its `n_samples` says how much is real audio); a shorter
tail is dropped. A song shorter than `min_chunk_seconds` is an error.

Limits (hostile or broken files): probing and decoding run under `timeout_s`
(GENRE_DECODE_TIMEOUT_S). A file whose header declares more than `max_seconds`
(GENRE_MAX_DECODED_SECONDS) is refused before a single sample is decoded (a
decompression bomb: a tiny FLAC declaring hours of silence); one that hides its length
is stopped by counting decoded samples. A file that decodes to clearly less than the
length its header declares, where that length is exact (FLAC, WAV/PCM, ALAC, WavPack,
TTA) or ffmpeg reported decoding errors, is truncated: an error, not a partial verdict.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from shared.featurespec import DEFAULT_SPEC, FeatureSpec

logger = logging.getLogger(__name__)

READ_BLOCK_FRAMES = 65536
STEREO_MEAN_FILTER = "pan=mono|c0=0.5*c0+0.5*c1"
PROBE_TIMEOUT_S = 30.0
EXACT_LENGTH_CODECS = ("flac", "pcm_", "alac", "wavpack", "tta")
"""Codecs whose declared length is a sample count, not an estimate from the bit rate."""
TRUNCATION_TOLERANCE_S = 0.5
TRUNCATION_TOLERANCE_FRACTION = 0.01
MAX_STDERR_BYTES = 64 * 1024
"""How much of ffmpeg's error output is read for the verdict's message."""


class DecodeError(Exception):
    """The file cannot be turned into audio; the message says why, for the verdict."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    duration: float | None
    codec: str


@dataclass(frozen=True)
class SongChunk:
    index: int
    pcm: np.ndarray  # float32, exactly spec.chunk_samples long
    n_samples: int  # real (unpadded) samples in pcm
    last: bool


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DecodeError(f"{name} is not installed; install ffmpeg (e.g. apt-get install ffmpeg)")
    return path


def _scrub(line: str, path: str | Path) -> str:
    """An ffmpeg/ffprobe message without the file's path (verdicts must not carry the
    services' storage paths)."""
    return line.replace(str(path), "the file").strip()


def probe(path: str | Path, timeout_s: float = 30.0) -> AudioInfo:
    """Read the first audio stream's parameters with ffprobe."""
    p = Path(path)
    if not p.is_file():
        raise DecodeError(f"no such file: {p}")
    if p.stat().st_size == 0:
        raise DecodeError("the file is empty")
    cmd = [
        _tool("ffprobe"), "-v", "error", "-select_streams", "a:0",
        "-show_entries", "stream=sample_rate,channels,codec_name,duration:format=duration",
        "-of", "json", "--", str(p),
    ]
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise DecodeError(f"ffprobe took longer than {timeout_s:g} s") from None
    return _parse_probe(res.returncode, res.stdout, res.stderr, p)


def _parse_probe(returncode: int, stdout: bytes, stderr: bytes, path: str | Path) -> AudioInfo:
    """ffprobe's JSON answer (and its exit status and messages) as AudioInfo, or DecodeError."""
    try:
        info = json.loads(stdout)
    except json.JSONDecodeError:
        info = {}
    streams = info.get("streams") or []
    if returncode != 0 or not streams:
        detail = stderr.decode("utf-8", "replace").strip().splitlines()
        why = _scrub(detail[-1], path) if detail else "no audio stream found"
        raise DecodeError(f"not a readable audio file ({why})")
    s = streams[0]
    try:
        rate = int(s.get("sample_rate") or 0)
        channels = int(s.get("channels") or 0)
    except ValueError:
        rate = channels = 0
    if rate <= 0 or channels <= 0:
        raise DecodeError("the audio stream has no valid sample rate or channel count")
    dur = s.get("duration") or (info.get("format") or {}).get("duration")
    try:
        duration = float(dur) if dur is not None else None  # "N/A" too: not a float
    except ValueError:
        duration = None
    return AudioInfo(sample_rate=rate, channels=channels, duration=duration, codec=str(s.get("codec_name", "")))


def iter_mono_blocks(
    path: str | Path,
    sample_rate: int | None = None,
    *,
    timeout_s: float = 600.0,
    max_seconds: float | None = None,
    block_frames: int = READ_BLOCK_FRAMES,
) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks at `sample_rate` (the file's own rate if None).

    Raises DecodeError when ffmpeg fails, exceeds `timeout_s`, the audio runs past
    `max_seconds` (declared or decoded: a guard against decompression bombs), or the file
    decodes to clearly less than it declares (truncated). The checks that need the whole
    stream run after the last block: `chunk_song` holds its final chunk back until then,
    so a truncated song ends with an error, never with a partial verdict."""
    info = probe(path, timeout_s=min(PROBE_TIMEOUT_S, timeout_s))
    if max_seconds is not None and info.duration is not None and info.duration > max_seconds:
        raise DecodeError(
            f"the file declares {info.duration:.0f} s of audio, longer than the limit of {max_seconds:g} s "
            "(GENRE_MAX_DECODED_SECONDS)"
        )
    rate = sample_rate or info.sample_rate
    cmd, ch = _ffmpeg_command(_tool("ffmpeg"), path, info, rate)
    max_frames = None if max_seconds is None else int(max_seconds * rate)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        timed_out = threading.Event()

        def _kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout_s, _kill)
        timer.daemon = True
        timer.start()
        total = 0
        try:
            assert proc.stdout is not None
            for mono in _pcm_blocks(proc.stdout.read, ch, block_frames, max_frames, max_seconds, timed_out.is_set):
                total += len(mono)
                yield mono
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()  # type: ignore[union-attr]
            rc = proc.wait()
        if timed_out.is_set():
            raise DecodeError(f"decoding took longer than {timeout_s:g} s (GENRE_DECODE_TIMEOUT_S)")
        err.seek(0)
        _check_exit(rc, err.read(MAX_STDERR_BYTES), path, info, total, rate)


def _ffmpeg_command(ffmpeg: str, path: str | Path, info: AudioInfo, rate: int) -> tuple[list[str], int]:
    """The ffmpeg command line that decodes the first audio stream to float32 PCM at `rate`,
    and the number of channels its output carries."""
    ch = info.channels
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn", "-sn", "-dn"]
    if ch == 2 and rate != info.sample_rate:
        # Resampling anyway: mix (L+R)/2 inside ffmpeg first, which halves the resampling
        # work and the pipe traffic. At the file's own rate the float32 mean below is used,
        # bit-exact with sonic-annotator (ffmpeg's pan may round differently).
        cmd += ["-af", STEREO_MEAN_FILTER]
        ch = 1
    if rate != info.sample_rate:
        cmd += ["-ar", str(rate)]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-"]
    return cmd, ch


def _pcm_blocks(
    read: Callable[[int], bytes],
    ch: int,
    block_frames: int,
    max_frames: int | None,
    max_seconds: float | None,
    stopped: Callable[[], bool],
) -> Iterator[np.ndarray]:
    """Mono float32 blocks (the float32 mean of the channels) from interleaved float32 PCM
    that `read(n)` returns in pieces of any length (b"" at the end). Stops without yielding
    when `stopped()`; DecodeError once more than `max_frames` frames have arrived."""
    total = 0
    leftover = b""
    frame_bytes = 4 * ch
    while True:
        data = read(block_frames * frame_bytes)
        if not data:
            return
        data = leftover + data
        usable = len(data) - len(data) % frame_bytes
        leftover = data[usable:]
        if usable == 0:
            continue
        frames = np.frombuffer(data[:usable], dtype=np.float32).reshape(-1, ch)
        mono = frames[:, 0].copy() if ch == 1 else (frames.sum(axis=1, dtype=np.float32) / np.float32(ch))
        total += len(mono)
        if max_frames is not None and total > max_frames:
            raise DecodeError(
                f"decoded audio is longer than the limit of {max_seconds:g} s (GENRE_MAX_DECODED_SECONDS)"
            )
        if stopped():
            return
        yield mono


def _check_exit(rc: int, stderr: bytes, path: str | Path, info: AudioInfo, total: int, rate: int) -> None:
    """After the last block: DecodeError when ffmpeg failed (its last message, without the
    path), nothing was decoded, or the file is truncated (`_check_complete`)."""
    lines = [_scrub(x, path) for x in stderr.decode("utf-8", "replace").strip().splitlines()]
    if rc != 0:
        raise DecodeError(f"ffmpeg could not decode the file: {lines[-1] if lines else f'exit status {rc}'}")
    if total == 0:
        raise DecodeError("the file holds no audio samples")
    _check_complete(info, total / rate, lines)


def _check_complete(info: AudioInfo, decoded_s: float, ffmpeg_errors: list[str]) -> None:
    """Raise DecodeError when the file stopped well short of the length it declares."""
    if info.duration is None or info.duration <= 0:
        return
    exact = info.codec.startswith(EXACT_LENGTH_CODECS)
    if not (exact or ffmpeg_errors):
        return  # an estimated length (e.g. MP3 from its bit rate) proves nothing by itself
    tolerance = max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * info.duration)
    if decoded_s < info.duration - tolerance:
        why = f" (ffmpeg: {ffmpeg_errors[-1]})" if ffmpeg_errors else ""
        raise DecodeError(
            f"the file is truncated or damaged: it declares {info.duration:.1f} s of audio but only "
            f"{decoded_s:.1f} s could be decoded{why}"
        )


def decode_file(
    path: str | Path, sample_rate: int | None = None, *, timeout_s: float = 600.0, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Whole file as one mono float32 array (for short files and tools; services stream)."""
    rate = sample_rate or probe(path).sample_rate
    blocks = list(iter_mono_blocks(path, rate, timeout_s=timeout_s, max_seconds=max_seconds))
    return np.concatenate(blocks), rate


def chunk_song(
    path: str | Path,
    spec: FeatureSpec = DEFAULT_SPEC,
    *,
    min_chunk_seconds: float = 10.0,
    timeout_s: float = 600.0,
    max_seconds: float | None = None,
) -> Iterator[SongChunk]:
    """Yield the song's chunks in order; the one marked `last` is known one block early."""
    blocks = iter_mono_blocks(path, spec.sample_rate, timeout_s=timeout_s, max_seconds=max_seconds)
    yield from chunk_blocks(blocks, spec, min_chunk_seconds=min_chunk_seconds)


def chunk_blocks(
    blocks: Iterable[np.ndarray], spec: FeatureSpec = DEFAULT_SPEC, *, min_chunk_seconds: float = 10.0
) -> Iterator[SongChunk]:
    """Cut mono float32 blocks of any lengths (at `spec.sample_rate`) into the song's chunks
    (the policy in the module's docstring). A chunk is yielded only once the next one is
    complete, and the final one only after `blocks` ends: an error the blocks raise at their
    end (a truncated file) comes before the song's last chunk."""
    size = spec.chunk_samples
    min_samples = int(min_chunk_seconds * spec.sample_rate)
    buf = np.empty(size, dtype=np.float32)
    fill = 0
    index = 0
    pending: SongChunk | None = None
    for block in blocks:
        pos = 0
        while pos < len(block):
            take = min(size - fill, len(block) - pos)
            buf[fill : fill + take] = block[pos : pos + take]
            fill += take
            pos += take
            if fill == size:
                if pending is not None:
                    yield pending
                pending = SongChunk(index=index, pcm=buf.copy(), n_samples=size, last=False)
                index += 1
                fill = 0
    tail: SongChunk | None = None
    if fill > 0 and fill >= min_samples:
        padded = np.zeros(size, dtype=np.float32)
        padded[:fill] = buf[:fill]
        tail = SongChunk(index=index, pcm=padded, n_samples=fill, last=True)
    if pending is None and tail is None:
        raise DecodeError(
            f"the audio is {fill / spec.sample_rate:.2f} s long, shorter than the minimum of "
            f"{min_chunk_seconds:g} s (GENRE_MIN_CHUNK_SECONDS)"
        )
    if pending is not None:
        yield SongChunk(pending.index, pending.pcm, pending.n_samples, last=tail is None)
    if tail is not None:
        yield tail
