"""`genre dataset split SRC DEST`: a deterministic, stratified, group-aware train/test split."""

from __future__ import annotations

import argparse
import json
import sys

from shared.cli import EXIT_FAILED_INPUT, EXIT_USAGE, CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dataset", help="prepare labelled song collections (split into train/test)")
    sub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    s = sub.add_parser(
        "split",
        help="split SRC into DEST/{train,test}/<genre>/ (deterministic, stratified, artist-disjoint)",
        description=(
            "Split a labelled collection into DEST/train/<genre>/ and DEST/test/<genre>/. SRC may be the "
            "ancestor's train|test/<genre>/* layout (pooled and re-split), GTZAN's genres/<genre>/*.au, a flat "
            "<genre>/* tree, or any folder with --manifest CSV (columns path,genre,artist[,split]). The split is "
            "deterministic for --seed, stratified per genre, and keeps each group (artist or song) on one side; "
            "a manifest with a split column (train or test on every row) is split exactly as it says instead. "
            "Files are hard-linked (symlinked across file systems) unless --copy. DEST/split.csv records it."
        ),
    )
    s.add_argument("src", help="source folder")
    s.add_argument("dest", help="destination folder (created; its train/ and test/ must be empty)")
    s.add_argument("--test-fraction", type=float, default=0.3, help="share of each genre's songs in test (default 0.3)")
    s.add_argument("--seed", type=int, default=0, help="changes the split, deterministically (default 0)")
    s.add_argument("--group-by", choices=("artist", "song"), default="song",
                   help="keep each artist's songs on one side (artist from the manifest, else from "
                        "'artist-title' file names), or split songs freely (default song)")
    s.add_argument("--manifest", help="CSV with columns path,genre[,artist][,split]; relative paths from the CSV's "
                                      "folder or SRC; a split column (train/test) decides the sides")
    s.add_argument("--copy", action="store_true", help="copy files instead of linking them")
    s.add_argument("--no-probe", action="store_true", help="skip checking every file with ffprobe (faster)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(func=run_split)
    p.set_defaults(func=lambda args: (p.print_help(), EXIT_USAGE)[1])


def run_split(args: argparse.Namespace) -> int:
    from shared.dataset import DatasetError, split_dataset

    if not 0.0 < args.test_fraction < 1.0:
        raise CliError(f"--test-fraction must be between 0 and 1, got {args.test_fraction}", EXIT_USAGE)
    try:
        report = split_dataset(
            args.src, args.dest, test_fraction=args.test_fraction, seed=args.seed, group_by=args.group_by,
            manifest=args.manifest, copy=args.copy, probe_audio=not args.no_probe, progress=sys.stderr.isatty(),
        )
    except DatasetError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    problems = report.problems()
    if args.json:
        print(json.dumps({
            "layout": report.layout, "split_from": report.split_from, "counts": report.counts, "groups": report.groups,
            "unreadable": [{"path": p, "reason": r} for p, r in report.unreadable],
            "empty_genres": report.empty_genres, "missing_side": report.one_sided,
            "ignored_files": len(report.ignored), "problems": problems,
        }, indent=2, ensure_ascii=False))
    else:
        how = "the manifest's split column" if report.split_from == "manifest" else f"seed {args.seed}"
        print(f"layout: {report.layout}; group by {args.group_by}; split by {how}")
        print(report.table())
        if report.ignored:
            print(f"{len(report.ignored)} non-audio files ignored")
        for line in problems:
            print(f"warning: {line}", file=sys.stderr)
    return EXIT_FAILED_INPUT if report.unreadable else 0
