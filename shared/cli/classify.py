"""`genre classify FILE...`: the embedded default, no broker."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shared.cli import EXIT_FAILED_INPUT, EXIT_OK, CliError
from shared.cli.output import print_verdict
from shared.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="classify songs in this process (no broker needed)",
        description="Decode each file, cut it into 30-second chunks, extract features, predict each chunk "
        "and print the song's genre (the mode of the chunk votes). Exit status 1 if any file could not "
        "be classified (it still gets an error verdict).",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files (any format ffmpeg reads)")
    p.add_argument("--model", help="model artifact folder (default: GENRE_MODEL_PATH or the shipped model)")
    p.add_argument("--backend", choices=["builtin", "sonic-annotator"], help="feature extractor (default: EXTRACTOR_BACKEND or builtin)")
    p.add_argument("--json", action="store_true", help="print one verdict object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shared.features import get_extractor
    from shared.model import ModelArtifact, ModelLoadError
    from shared.pipeline import classify_file
    from shared.sonic_annotator import SonicAnnotatorError
    from shared.tf_import import import_tensorflow_quietly

    settings = Settings.from_env()
    model_path = args.model or settings.model_path
    import_tensorflow_quietly()
    try:
        model = ModelArtifact.load(model_path)
    except ModelLoadError as exc:
        raise CliError(f"{exc} (pass --model DIR or set GENRE_MODEL_PATH)") from None
    try:
        extract = get_extractor(args.backend or settings.extractor_backend)
    except SonicAnnotatorError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    failed = 0
    files = list(args.files)
    bar = tqdm(files, unit="song", disable=len(files) < 2 or not sys.stderr.isatty(), file=sys.stderr)
    for path in bar:
        bar.set_postfix_str(os.fspath(path.name)[:40])
        verdict = classify_file(path, model, extract, settings)
        failed += verdict.status != "ok"
        bar.clear()
        print_verdict(verdict, args.json)
    return EXIT_FAILED_INPUT if failed else EXIT_OK
