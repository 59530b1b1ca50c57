"""The second feature backend: the real sonic-annotator CLI, and its CSV format.

`extract_features(pcm, sample_rate)` writes the chunk to a temporary 32-bit float WAV
(sonic-annotator reads it through libsndfile, which hands float samples over unchanged,
so the plugins see exactly the samples the built-in backend sees), runs sonic-annotator
once on it with the three transforms (list arguments, no shell, a timeout) and parses the
CSV files it writes into a ChunkFeatures.

`read_csv` parses sonic-annotator's `-w csv` files; `format_csv_rows` writes them back
byte for byte (svcore's CSVFeatureWriter: `<sec>.<9-digit ns>` timestamps, values printed
with Qt `QString::arg(v, 0, 'g', digits)` -- printf `%.<digits>g` with a two-digit minimum
exponent -- then `e-0` replaced by `e-`).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from shared.featurespec import ChunkFeatures

MFCC_TRANSFORM = "vamp:qm-vamp-plugins:qm-mfcc:coefficients"
PEAKS_TRANSFORM = "vamp:bbc-vamp-plugins:bbc-spectral-contrast:peaks"
VALLEYS_TRANSFORM = "vamp:bbc-vamp-plugins:bbc-spectral-contrast:valleys"
TRANSFORMS = {"mfcc": MFCC_TRANSFORM, "peaks": PEAKS_TRANSFORM, "valleys": VALLEYS_TRANSFORM}
WIDTHS = {"mfcc": 20, "peaks": 7, "valleys": 7}

DEFAULT_DIGITS = 6
EXACT_DIGITS = 9  # 9 significant digits round-trip every float32
DEFAULT_TIMEOUT_S = 300.0
BINARY = "sonic-annotator"


class SonicAnnotatorError(RuntimeError):
    """sonic-annotator failed or wrote something unexpected."""


class SonicAnnotatorNotFound(SonicAnnotatorError, FileNotFoundError):
    """The sonic-annotator binary is not on PATH."""


# --- CSV format ----------------------------------------------------------------------


def csv_name(basename: str, transform: str) -> str:
    """sonic-annotator's file name: `<basename>_vamp_<lib>_<plugin>_<output>.csv`
    (the transform id with ':' replaced by '_')."""
    return f"{basename}_{transform.replace(':', '_')}.csv"


def csv_names(basename: str) -> dict[str, str]:
    """The three file names per output ("mfcc", "peaks", "valleys")."""
    return {key: csv_name(basename, t) for key, t in TRANSFORMS.items()}


def format_timestamp_ns(ns: int) -> str:
    sec, nsec = divmod(int(ns), 1_000_000_000)
    return f"{sec}.{nsec:09d}"


def format_value(v: float, digits: int = DEFAULT_DIGITS) -> str:
    """Qt `QString::arg(v, 0, 'g', digits)` as sonic-annotator post-processes it."""
    d = max(int(digits), 1)
    return ("%.*g" % (d, float(v) + 0.0)).replace("e-0", "e-")


def _to_ns(times: np.ndarray) -> list[int]:
    t = np.asarray(times)
    if t.dtype.kind in "iu":  # already integer nanoseconds
        return [int(v) for v in t]
    return [int(v) for v in np.rint(t.astype(np.float64) * 1e9)]


def format_csv_rows(times: np.ndarray, values: np.ndarray, digits: int = DEFAULT_DIGITS) -> str:
    """The text of one sonic-annotator CSV file: `timestamp,v1,...,vn\\n` per row.

    `times` are seconds (float, rounded to the nearest ns) or integer nanoseconds;
    `values` is (rows, n) and printed as float32 values are (promoted to double)."""
    vals = np.asarray(values, dtype=np.float64) + 0.0  # + 0.0 turns a -0 into 0
    if vals.ndim == 1:
        vals = vals[:, None]
    ns = _to_ns(times)
    if len(ns) != vals.shape[0]:
        raise ValueError(f"{len(ns)} timestamps for {vals.shape[0]} rows")
    d = max(int(digits), 1)
    fmt = "%." + str(d) + "g"
    lines = []
    for t, row in zip(ns, vals.tolist()):
        cells = [fmt % v for v in row]
        text = ",".join(cells)
        if "e-0" in text:
            text = text.replace("e-0", "e-")
        lines.append(format_timestamp_ns(t) + "," + text + "\n")
    return "".join(lines)


def read_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse one sonic-annotator CSV file: (times in s as float64 (rows,), values float32 (rows, n))."""
    text = Path(path).read_text(encoding="utf-8")
    rows = [line.split(",") for line in text.splitlines() if line.strip()]
    if not rows:
        return np.zeros(0, dtype=np.float64), np.zeros((0, 0), dtype=np.float32)
    width = len(rows[0])
    if width < 2 or any(len(r) != width for r in rows):
        raise ValueError(f"{path}: not a sonic-annotator CSV (rows must be timestamp,v1,...,vn of one width)")
    try:
        times = np.array([float(r[0]) for r in rows], dtype=np.float64)
        values = np.array([[float(c) for c in r[1:]] for r in rows], dtype=np.float64).astype(np.float32)
    except ValueError as exc:
        raise ValueError(f"{path}: not a sonic-annotator CSV ({exc})") from None
    return times, values


# --- Running the binary ----------------------------------------------------------------


def find_binary() -> str:
    path = shutil.which(BINARY)
    if path is None:
        raise SonicAnnotatorNotFound(
            "sonic-annotator is not on PATH: install sonic-annotator 1.6 with the qm-vamp-plugins and "
            "bbc-vamp-plugins (see ../shared/golden/README.md), or use the builtin backend"
        )
    return path


def vamp_env(binary: str) -> dict[str, str]:
    """The environment for a run: VAMP_PATH from the environment, else `vamp/` beside the binary."""
    env = dict(os.environ)
    if not env.get("VAMP_PATH"):
        beside = Path(binary).resolve().parent / "vamp"
        if beside.is_dir():
            env["VAMP_PATH"] = str(beside)
    return env


def write_float_wav(path: str | Path, pcm: np.ndarray, sample_rate: int) -> None:
    """Mono 32-bit IEEE float WAV (format 3, with a fact chunk): the samples exactly."""
    data = np.ascontiguousarray(pcm, dtype="<f4").tobytes()
    n = len(data) // 4
    fmt = struct.pack("<HHIIHHH", 3, 1, int(sample_rate), int(sample_rate) * 4, 4, 32, 0)
    fact = struct.pack("<I", n)
    riff_size = 4 + (8 + len(fmt)) + (8 + len(fact)) + (8 + len(data))
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", riff_size) + b"WAVE")
        f.write(b"fmt " + struct.pack("<I", len(fmt)) + fmt)
        f.write(b"fact" + struct.pack("<I", len(fact)) + fact)
        f.write(b"data" + struct.pack("<I", len(data)) + data)


def run_sonic_annotator(
    audio_path: str | Path,
    out_dir: str | Path,
    *,
    digits: int = EXACT_DIGITS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transforms: tuple[str, ...] = (MFCC_TRANSFORM, PEAKS_TRANSFORM, VALLEYS_TRANSFORM),
) -> dict[str, Path]:
    """Run sonic-annotator once on one file; returns the CSV path per output key."""
    binary = find_binary()
    cmd = [binary]
    for t in transforms:
        cmd += ["-d", t]
    cmd += ["-w", "csv", "--csv-basedir", str(out_dir), "--csv-digits", str(int(digits)), "--csv-force", str(audio_path)]
    try:
        res = subprocess.run(
            cmd, capture_output=True, timeout=timeout_s, env=vamp_env(binary), stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired:
        raise SonicAnnotatorError(f"sonic-annotator took longer than {timeout_s:g} s") from None
    base = Path(audio_path).stem
    paths = {key: Path(out_dir) / csv_name(base, t) for key, t in TRANSFORMS.items() if t in transforms}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if res.returncode != 0 or missing:
        lines = [ln for ln in res.stderr.decode("utf-8", "replace").splitlines() if "%" not in ln and ln.strip()]
        why = "; ".join(lines[-3:]) if lines else f"exit status {res.returncode}"
        if missing:
            why += f" (missing output: {', '.join(missing)}; is VAMP_PATH set to the folder with the plugins?)"
        raise SonicAnnotatorError(f"sonic-annotator failed: {why}")
    return paths


def extract_features(pcm: np.ndarray, sample_rate: int = 22050, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> ChunkFeatures:
    """Features of one chunk computed by the real sonic-annotator (same contract as the builtin)."""
    x = np.asarray(pcm, dtype=np.float32)
    if x.ndim != 1 or x.size < 1:
        raise ValueError(f"pcm must be a non-empty mono array, got shape {x.shape}")
    rate = int(round(float(sample_rate)))
    with tempfile.TemporaryDirectory(prefix="genre-sa-") as tmp:
        wav = Path(tmp) / "chunk.wav"
        write_float_wav(wav, x, rate)
        paths = run_sonic_annotator(wav, tmp, digits=EXACT_DIGITS, timeout_s=timeout_s)
        arrays = {}
        for key, p in paths.items():
            _, values = read_csv(p)
            if values.ndim != 2 or values.shape[1] != WIDTHS[key]:
                raise SonicAnnotatorError(f"{p.name}: expected {WIDTHS[key]} values per row, got shape {values.shape}")
            arrays[key] = np.ascontiguousarray(values, dtype=np.float32)
    return ChunkFeatures(mfcc=arrays["mfcc"], peaks=arrays["peaks"], valleys=arrays["valleys"])
