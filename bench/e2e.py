"""Songs per minute through the whole Kafka pipeline against `genre classify` in one process.

    python bench/e2e.py [--songs 16] [--seconds 90] [--model models/default] [--keep]

Both sides classify the same N generated songs (the two synthetic genres, alternating;
192 kbps MP3 of --seconds each), in one run of this script, on this machine:

- pipeline: a real broker (GENRE_KAFKA_BOOTSTRAP if it answers, else a LocalBroker in a
  temporary directory), topics of their own, and the three services as separate
  processes (`python -m services.chunker|extractor|classifier`, as tests/fixtures/services
  runs them). A warm-up song goes through first, so the services are started, connected
  and have their model loaded, as in production. Timed: from `genre produce` of the N
  songs to the last verdict's `verdict_at`.
- embedded: `genre classify --json FILE...` on the same files, one process, timed from
  launch to exit (interpreter start, TensorFlow import and model load included); its
  start-up is also measured alone (`genre classify` of the warm-up song) and subtracted
  for a steady-state figure. It runs after the pipeline is stopped.

The extractor service computes the model's feature spec (GENRE_FEATURE_SPEC set from the
model's metadata), as `genre classify` does: v2 (with the log-mel) for a model that reads
it, such as the pretrained architecture, v1 for a Vamp-only one.

Every process gets the same thread limits (OPENBLAS/OMP/TF: 1 thread each); the pipeline
scales by processes. The model is models/default if present, else the synthetic model of
tests/fixtures/models (trained here, a minute or so). The verdicts of both sides must
agree. Prints the figures, the ratio and the command lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.broker import external_or_local  # noqa: E402

THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
              "TF_NUM_INTEROP_THREADS": "1"}


def cmdline(env: dict[str, str], keys: list[str], argv: list[str]) -> str:
    return " ".join([*(f"{k}={shlex.quote(env[k])}" for k in keys if k in env), *map(shlex.quote, argv)])


def find_model(arg: str | None, work: Path) -> tuple[str, str, bool]:
    """(path, note, synthetic?) of the model both sides use."""
    from tests.fixtures.models import train_synthetic_model

    candidate = Path(arg) if arg else ROOT / "models" / "default"
    if (candidate / "metadata.json").exists():
        return str(candidate), "shipped" if not arg else "given", False
    if arg:
        sys.exit(f"bench/e2e.py: no model artifact at {arg}")
    t0 = time.perf_counter()
    path = train_synthetic_model(work / "model")
    return str(path), f"synthetic (models/default absent; trained in {time.perf_counter() - t0:.0f} s)", True


def model_spec(path: str):  # noqa: ANN201
    """The feature spec in the model's metadata.json (without loading TensorFlow here)."""
    from shared.featurespec import FeatureSpec

    meta = json.loads((Path(path) / "metadata.json").read_text(encoding="utf-8"))
    return FeatureSpec.from_dict(meta["feature_spec"]), meta.get("arch")


def make_songs(root: Path, n: int, seconds: float) -> tuple[Path, list[Path], dict[Path, str]]:
    from tests.fixtures.audio import SYNTH_GENRES, make_song, write_audio

    mp3 = ("-b:a", "192k")
    warm = write_audio(root / "warmup.mp3", make_song("drone", 30, 999), codec_args=mp3)
    songs, truth = [], {}
    for i in range(n):
        genre = SYNTH_GENRES[i % len(SYNTH_GENRES)]
        path = write_audio(root / f"song{i:03d} {genre}.mp3", make_song(genre, seconds, 500 + i), codec_args=mp3)
        songs.append(path)
        truth[path] = genre
    return warm, songs, truth


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=16, help="songs to classify (default 16)")
    ap.add_argument("--seconds", type=float, default=90.0, help="length of each song (default 90)")
    ap.add_argument("--model", default=None, help="model artifact (default models/default, else a synthetic one)")
    ap.add_argument("--partitions", type=int, default=3, help="partitions of the bench topics (default 3)")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up waiting for verdicts after this (s)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, songs)")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from shared.topics import ensure_topics
    from tests.fixtures.broker import delete_test_topics, unique_settings
    from tests.fixtures.services import Pipeline

    work = Path(tempfile.mkdtemp(prefix="genre-bench-e2e-"))
    print(f"bench/e2e.py: {args.songs} songs x {args.seconds:g} s, work dir {work}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    model, model_note, synthetic = find_model(args.model, work)
    spec, arch = model_spec(model)
    print(f"model: {model} ({model_note}; arch {arch}, features {spec.id})")
    warm, songs, truth = make_songs(work / "songs", args.songs, args.seconds)
    audio_s = args.songs * args.seconds

    bootstrap, broker = external_or_local(work)
    # The extractor computes the model's spec (GENRE_FEATURE_SPEC), as `genre classify` does:
    # v2 (the Vamp arrays + the log-mel) for a model that reads the log-mel, v1 otherwise.
    settings = unique_settings(bootstrap, "bench-e2e", partitions=args.partitions, feature_spec=spec.version)
    pipeline = Pipeline(settings, model, work)
    pipe_by_name: dict[str, dict] = {}
    try:
        ensure_topics(settings)
        pipeline.start()
        t0 = time.perf_counter()
        pipeline.produce(warm)
        pipeline.verdicts(1, timeout=args.timeout)
        warm_s = time.perf_counter() - t0

        start_epoch = time.time()
        ids = pipeline.produce(*songs)
        records = pipeline.verdicts(len(ids) + 1, timeout=args.timeout)
        wall_seen = time.time() - start_epoch
        mine = [r for r in records if r["song_id"] in set(ids.values())]
        last = max(r["verdict_at"] for r in mine)
        pipe_s = last - start_epoch
        pipe_by_name = {Path(r["filename"]).name: r for r in mine}
        env = pipeline.env
    finally:
        pipeline.stop()
        delete_test_topics(settings)
        if broker is not None:
            broker.stop(grace=20)  # type: ignore[attr-defined]
    # The environment every process got (settings that differ from the defaults, thread
    # limits), then one line per command.
    from shared.settings import Settings
    from tests.fixtures.services import settings_env

    defaults = settings_env(Settings())
    shown = [k for k in sorted(env) if (k.startswith("GENRE_") and defaults.get(k) != env[k]) or k in THREAD_ENV]
    exports = " ".join(f"{k}={shlex.quote(env[k])}" for k in shown)
    svc_cmds = [f"{sys.executable} -m services.{name}" for name in ("chunker", "extractor", "classifier")]
    produce_cmd = cmdline(env, [], [sys.executable, "-m", "shared.cli", "produce", "--json",
                                    *(str(p) for p in songs[:2])]) + " ..."

    def classify(files: list[Path]) -> tuple[float, list[dict]]:
        argv = [sys.executable, "-m", "shared.cli", "classify", "--json", "--model", model, *map(str, files)]
        t = time.perf_counter()
        res = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
        took = time.perf_counter() - t
        if res.returncode != 0:
            sys.exit(f"genre classify exited {res.returncode}:\n{res.stderr[-3000:]}")
        return took, [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    start_s, _ = classify([warm])
    emb_s, emb_rows = classify(songs)
    emb_by_name = {r["filename"]: r for r in emb_rows}
    classify_cmd = cmdline(env, [], [sys.executable, "-m", "shared.cli", "classify", "--json", "--model", model,
                                     *(str(p) for p in songs[:2])]) + " ..."

    # Same answers on both sides (and the right ones for generated songs).
    disagree = [p.name for p in songs
                if (pipe_by_name[p.name]["status"], pipe_by_name[p.name]["genre"])
                != (emb_by_name[p.name]["status"], emb_by_name[p.name]["genre"])]
    wrong = [p.name for p in songs if pipe_by_name[p.name]["genre"] != truth[p]]

    steady_s = max(1e-9, emb_s - start_s)
    pipe_rate = 60 * args.songs / pipe_s
    emb_rate = 60 * args.songs / emb_s
    steady_rate = 60 * args.songs / steady_s
    print()
    print("commands (every process with this environment):")
    print(f"  export {exports}")
    for c in svc_cmds:
        print(f"  {c} &")
    print(f"  {produce_cmd}    # timed: this until the last verdict")
    print(f"  {classify_cmd}    # timed: launch to exit")
    print()
    print(f"{'':<44}{'seconds':>9}{'songs/min':>11}{'x real time':>13}")
    print(f"{'pipeline (3 services + broker, warm)':<44}{pipe_s:>9.1f}{pipe_rate:>11.1f}{audio_s / pipe_s:>13.1f}")
    print(f"{'genre classify (one process, incl. start)':<44}{emb_s:>9.1f}{emb_rate:>11.1f}{audio_s / emb_s:>13.1f}")
    print(f"{'genre classify, start-up subtracted':<44}{steady_s:>9.1f}{steady_rate:>11.1f}{audio_s / steady_s:>13.1f}")
    print(f"  (pipeline warm-up song incl. service start: {warm_s:.1f} s; classify start-up + 1 x 30 s song: "
          f"{start_s:.1f} s; pipeline verdicts seen by the reader after {wall_seen:.1f} s)")
    print(f"pipeline / classify: {pipe_rate / emb_rate:.2f}x (vs start-up subtracted: {pipe_rate / steady_rate:.2f}x)")
    errors = [p.name for p in songs if pipe_by_name[p.name]["status"] != "ok" or emb_by_name[p.name]["status"] != "ok"]
    print(f"verdicts agree: {len(songs) - len(disagree)}/{len(songs)}"
          + (f"; right genre: {len(songs) - len(wrong)}/{len(songs)}" if synthetic else
             " (generated songs: the model's genres are not theirs, so only agreement counts)")
          + (f"; not ok: {', '.join(errors)}" if errors else ""))
    if disagree:
        print(f"disagree: {', '.join(disagree)}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
