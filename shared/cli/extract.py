"""`genre extract FILE... --out DIR`: a drop-in for the ancestor's sonic-annotator step.

For each input it writes the three CSV files that

    sonic-annotator -d vamp:qm-vamp-plugins:qm-mfcc:coefficients \\
        -d vamp:bbc-vamp-plugins:bbc-spectral-contrast:peaks \\
        -d vamp:bbc-vamp-plugins:bbc-spectral-contrast:valleys \\
        -w csv --csv-basedir DIR [--csv-digits N] FILE

writes (same names, rows, timestamps and number formatting), over the whole file at its
own sample rate (or --sample-rate), mixed down to mono as the float32 mean of the channels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from shared.cli import EXIT_FAILED_INPUT, EXIT_OK, EXIT_USAGE, CliError
from shared.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="write sonic-annotator's MFCC and spectral-contrast CSV files for audio files",
        description="Compute qm-mfcc:coefficients and bbc-spectral-contrast:peaks/valleys for each whole file "
        "and write the three CSV files sonic-annotator 1.6 writes for them (same names, layout and number "
        "formatting) into DIR. Exit status 1 if any file failed.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files (any format ffmpeg reads)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created if missing)")
    p.add_argument(
        "--backend", choices=["builtin", "sonic-annotator"],
        help="feature extractor (default: EXTRACTOR_BACKEND or builtin)",
    )
    p.add_argument("--csv-digits", type=int, default=6, metavar="N", help="significant digits of values (default 6)")
    p.add_argument("--sample-rate", type=int, metavar="HZ", help="resample to this rate (default: the file's own)")
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    p.set_defaults(func=run)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def extract_file(path: Path, out_dir: Path, extract, digits: int, sample_rate: int | None, settings: Settings) -> dict:
    """Decode, extract and write the three CSV files of one input; returns a report dict."""
    from shared.audio import decode_file
    from shared.features import CONTRAST_STEP, MFCC_STEP, frame_times_ns
    from shared.sonic_annotator import csv_names, format_csv_rows

    pcm, rate = decode_file(
        path, sample_rate, timeout_s=settings.decode_timeout_s, max_seconds=settings.max_decoded_seconds
    )
    feats = extract(pcm, rate)
    names = csv_names(path.stem)
    steps = {"mfcc": MFCC_STEP, "peaks": CONTRAST_STEP, "valleys": CONTRAST_STEP}
    outputs = []
    for key, values in feats.arrays().items():
        target = out_dir / names[key]
        times = frame_times_ns(values.shape[0], steps[key], rate)
        _write_atomic(target, format_csv_rows(times, values, digits))
        outputs.append(str(target))
    return {
        "file": str(path), "status": "ok", "sample_rate": rate, "samples": int(pcm.size),
        "frames": {k: int(v.shape[0]) for k, v in feats.arrays().items()}, "outputs": outputs,
    }


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shared.audio import DecodeError
    from shared.features import get_extractor
    from shared.sonic_annotator import SonicAnnotatorError, SonicAnnotatorNotFound

    settings = Settings.from_env()
    if args.csv_digits < 1:
        raise CliError("--csv-digits must be at least 1", EXIT_USAGE)
    if args.sample_rate is not None and args.sample_rate <= 0:
        raise CliError("--sample-rate must be a positive number of Hz", EXIT_USAGE)
    try:
        extract = get_extractor(args.backend or settings.extractor_backend)
    except SonicAnnotatorNotFound as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"--out {out_dir} exists and is not a folder", EXIT_USAGE)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create --out {out_dir}: {exc.strerror or exc}") from None

    files: list[Path] = list(args.files)
    failed = 0
    seen: dict[str, Path] = {}
    bar = tqdm(files, unit="file", disable=len(files) < 2 or not sys.stderr.isatty(), file=sys.stderr, dynamic_ncols=True)
    for path in bar:
        bar.set_postfix_str(path.name[:40])
        report: dict
        try:
            if path.stem in seen:
                raise ValueError(f"its output files would overwrite those of {seen[path.stem]} (same base name)")
            seen[path.stem] = path
            report = extract_file(path, out_dir, extract, args.csv_digits, args.sample_rate, settings)
        except SonicAnnotatorNotFound as exc:
            raise CliError(str(exc)) from None
        except (DecodeError, SonicAnnotatorError, ValueError, OSError) as exc:
            failed += 1
            report = {"file": str(path), "status": "error", "error": str(exc)}
        bar.clear()
        if args.json:
            print(json.dumps(report, ensure_ascii=False, sort_keys=True), flush=True)
        elif report["status"] == "ok":
            frames = report["frames"]
            print(
                f"{path}: {report['samples']} samples at {report['sample_rate']} Hz -> "
                f"{frames['mfcc']} MFCC and {frames['peaks']} contrast frames in {out_dir}",
                flush=True,
            )
        if report["status"] != "ok":
            print(f"genre extract: {path}: error: {report['error']}", file=sys.stderr, flush=True)
    bar.close()
    return EXIT_FAILED_INPUT if failed else EXIT_OK
