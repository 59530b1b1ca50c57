"""`genre produce FILE|DIR...`: send songs to the ingest topic (claim check + reference)."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Iterator

from shared.cli import EXIT_FAILED_INPUT, EXIT_OK, EXIT_USAGE, CliError

AUDIO_EXTENSIONS = {".mp3", ".flac", ".ogg", ".oga", ".opus", ".wav", ".m4a", ".aac", ".au", ".aif", ".aiff",
                    ".wma", ".mp4", ".webm", ".mka"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "produce",
        help="send songs to the pipeline's ingest topic",
        description="Store each song in the shared store (GENRE_BLOB_DIR) and send a reference to the ingest "
        "topic. Directories are searched recursively for audio files. Prints one line per song: its id and name.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="FILE|DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object per song")
    p.set_defaults(func=run)


def expand(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            yield path


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shared import kafka_io
    from shared.blobstore import BlobStore
    from shared.schemas import SongRef, now
    from shared.settings import Settings

    settings = Settings.from_env()
    files = list(expand(args.paths))
    missing = [p for p in files if not p.is_file()]
    for p in missing:
        print(f"genre produce: {p}: no such file", file=sys.stderr)
    files = [p for p in files if p.is_file()]
    if not files:
        print("genre produce: nothing to send", file=sys.stderr)
        return EXIT_USAGE if not missing else EXIT_FAILED_INPUT
    try:
        kafka_io.wait_for_broker(settings, timeout=15)
        producer = kafka_io.make_producer(settings)
    except kafka_io.KafkaIOError as exc:
        raise CliError(str(exc)) from None
    store = BlobStore(settings.blob_dir)
    sent = []
    try:
        for path in tqdm(files, unit="song", file=sys.stderr, disable=len(files) < 2 or None):
            key, size = store.put_file(path)
            ref = SongRef(song_id=uuid.uuid4().hex, filename=str(path), blob=key, size=size, produced_at=now())
            future = producer.send(settings.topic_songs, key=ref.song_id.encode(), value=ref.encode())
            sent.append((ref, future))
        producer.flush()
        for ref, future in sent:
            future.get(timeout=30)
            if args.json:
                print(json.dumps({"song_id": ref.song_id, "filename": ref.filename, "blob": ref.blob,
                                  "size": ref.size}, ensure_ascii=False))
            else:
                print(f"{ref.song_id}\t{ref.filename}")
    except Exception as exc:
        raise CliError(f"could not send to {settings.topic_songs}: {exc}") from None
    finally:
        producer.close()
    return EXIT_FAILED_INPUT if missing else EXIT_OK
