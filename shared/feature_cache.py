"""Per-song feature extraction for training and evaluation, with an on-disk cache.

`song_features` runs the very functions the services run (shared.audio.chunk_song, then
the extractor of shared.features) on one file. `extract_songs` does it for many files in
worker processes (one BLAS/OpenMP thread each) with a tqdm progress bar, and caches each
song's features on disk keyed by the SHA-256 of the file's bytes, the feature spec, the
extractor backend, the chunking policy and the gain, so a second run skips finished songs.

Cache format: one ``.npz`` per song holding a (chunks, frames, width) array per array of
the spec (``logmel`` too under spec v2) and ``n_samples``: numpy arrays only, read with
allow_pickle=False, so a tampered cache file cannot run code; written to a temporary name
and renamed into place.
Location: ``$GENRE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/genre/features`` (default
``~/.cache/genre/features``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from shared.featurespec import DEFAULT_SPEC, ChunkFeatures, FeatureSpec

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
HASH_BLOCK = 1 << 20
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def cache_dir() -> Path:
    env = os.environ.get("GENRE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genre" / "features"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class SongResult:
    path: str
    features: list[ChunkFeatures]
    n_samples: list[int]
    error: str = ""
    cached: bool = False


def _cache_key(digest: str, spec: FeatureSpec, backend: str, min_chunk_seconds: float, gain_db: float) -> str:
    params = f"v{CACHE_FORMAT}|{spec.id}|{backend}|min{min_chunk_seconds:g}|gain{gain_db:g}"
    return hashlib.sha256(f"{digest}|{params}".encode()).hexdigest()


def _cache_path(root: Path, key: str) -> Path:
    return root / key[:2] / f"{key}.npz"


def _load_cached(p: Path, spec: FeatureSpec) -> tuple[list[ChunkFeatures], list[int]] | None:
    names = list(spec.feature_shapes())
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in names}
            n = z["n_samples"]
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("ignoring unreadable cache file %s: %s", p, exc)
        return None
    feats = [ChunkFeatures(**{k: a[i] for k, a in arrays.items()}) for i in range(len(n))]
    return feats, [int(x) for x in n]


def _store(p: Path, feats: Sequence[ChunkFeatures], n_samples: Sequence[int], spec: FeatureSpec) -> None:
    names = list(spec.feature_shapes())
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                **{k: np.stack([getattr(f, k) for f in feats]).astype(np.float32) for k in names},
                n_samples=np.asarray(n_samples, dtype=np.int64),
            )
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def song_features(
    path: str | Path,
    spec: FeatureSpec = DEFAULT_SPEC,
    *,
    backend: str = "builtin",
    min_chunk_seconds: float = 10.0,
    gain_db: float = 0.0,
) -> tuple[list[ChunkFeatures], list[int]]:
    """Features of every chunk of one file, exactly as the services compute them.
    `gain_db` scales the decoded audio (float, no clipping) before extraction."""
    from shared.audio import chunk_song
    from shared.features import extract_chunk, get_extractor

    extract = get_extractor(backend)
    gain = np.float32(10 ** (gain_db / 20))
    feats, ns = [], []
    for chunk in chunk_song(path, spec, min_chunk_seconds=min_chunk_seconds):
        pcm = chunk.pcm if gain_db == 0 else chunk.pcm * gain
        feats.append(extract_chunk(pcm, spec, extract))
        ns.append(chunk.n_samples)
    return feats, ns


def cached_song_features(
    path: str | Path,
    spec: FeatureSpec = DEFAULT_SPEC,
    *,
    backend: str = "builtin",
    min_chunk_seconds: float = 10.0,
    gain_db: float = 0.0,
    root: Path | None = None,
    use_cache: bool = True,
) -> SongResult:
    """song_features through the cache; a decode error becomes SongResult.error."""
    from shared.audio import DecodeError

    try:
        digest = file_sha256(path)
    except OSError as exc:
        return SongResult(str(path), [], [], error=f"cannot read the file: {exc.strerror or exc}")
    p = _cache_path(root or cache_dir(), _cache_key(digest, spec, backend, min_chunk_seconds, gain_db))
    if use_cache and p.is_file():
        got = _load_cached(p, spec)
        if got is not None:
            return SongResult(str(path), got[0], got[1], cached=True)
    try:
        feats, ns = song_features(path, spec, backend=backend, min_chunk_seconds=min_chunk_seconds, gain_db=gain_db)
    except DecodeError as exc:
        return SongResult(str(path), [], [], error=str(exc))
    if use_cache:
        try:
            _store(p, feats, ns, spec)
        except OSError as exc:
            logger.warning("cannot write the feature cache %s: %s", p, exc)
    return SongResult(str(path), feats, ns)


def _one_thread() -> None:
    for name in THREAD_ENV:
        os.environ[name] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl missing or odd BLAS
        pass


def _worker(args: tuple) -> SongResult:
    path, spec_dict, kwargs = args
    return cached_song_features(path, FeatureSpec.from_dict(spec_dict), **kwargs)


def extract_songs(
    paths: Sequence[str | Path],
    spec: FeatureSpec = DEFAULT_SPEC,
    *,
    jobs: int = 1,
    backend: str = "builtin",
    min_chunk_seconds: float = 10.0,
    gain_db: float = 0.0,
    use_cache: bool = True,
    root: Path | None = None,
    progress: bool = False,
    desc: str = "features",
) -> list[SongResult]:
    """Features of many songs, in input order; `jobs` worker processes (1: in-process)."""
    kwargs = dict(backend=backend, min_chunk_seconds=min_chunk_seconds, gain_db=gain_db,
                  use_cache=use_cache, root=root or cache_dir())
    tasks = [(str(p), spec.to_dict(), kwargs) for p in paths]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc=desc, unit="song", dynamic_ncols=True)
    results: list[SongResult] = []
    try:
        if jobs <= 1:
            for t in tasks:
                results.append(_worker(t))
                if bar is not None:
                    bar.update(1)
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # no forked TensorFlow state in the workers
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_one_thread) as pool:
                for r in pool.map(_worker, tasks, chunksize=1):
                    results.append(r)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results
