"""Data locations as reports record them: relative to a named root, with a content fingerprint.

Reports and model metadata are committed and read on other machines, so they must not
carry the absolute directories of the machine that made them. A location is written as

- ``$GENRE_DATA_ROOT/rel/path`` when it lies under the folder named by ``GENRE_DATA_ROOT``
  (``scripts/make-model.sh`` sets it to its cache folder);
- ``~/rel/path`` when it lies under the user's home;
- as given when it was given relative (``models/default``, ``../shared/data``);
- otherwise ``.../parent/name``: its last two components only.

`data_location` adds a fingerprint of what the folder holds, so two reports can be told to
be about the same data wherever it lived: the SHA-256 of the sorted (relative path, size)
of every file (CSV manifests by their bytes, since an artist renamed keeps the size). It
reads no audio, so it costs one directory walk.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

ROOT_ENV = "GENRE_DATA_ROOT"
ELSEWHERE = "..."
_SOURCE_PREFIX = re.compile(r"^([A-Za-z0-9_.-]+):(/.*)$")


def _under(path: str, root: str) -> str | None:
    """path relative to root (posix), or None when path is not inside root."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:  # another drive
        return None
    if rel == os.curdir:
        return ""
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return Path(rel).as_posix()


def _split(path: str | os.PathLike[str], data_root: str | None, home: str | None) -> tuple[str, str]:
    """(root, relative path) of a location: root is $GENRE_DATA_ROOT, ~, . or ..."""
    given = os.fspath(path)
    absolute = os.path.abspath(given)
    data_root = os.environ.get(ROOT_ENV) if data_root is None else data_root
    home = os.path.expanduser("~") if home is None else home
    candidates = [absolute]
    if os.path.realpath(absolute) != absolute:
        candidates.append(os.path.realpath(absolute))
    if data_root:
        for p in candidates:
            for r in dict.fromkeys((os.path.abspath(data_root), os.path.realpath(data_root))):
                rel = _under(p, r)
                if rel is not None:
                    return f"${ROOT_ENV}", rel
    if not os.path.isabs(given):
        return ".", Path(given).as_posix()
    if home and home != os.sep:
        rel = _under(absolute, os.path.abspath(home))
        if rel is not None:
            return "~", rel
    return ELSEWHERE, "/".join(Path(absolute).parts[1:][-2:])


def portable_path(path: str | os.PathLike[str], *, data_root: str | None = None, home: str | None = None) -> str:
    """The location as a report may record it (see the module docstring); data_root and
    home default to $GENRE_DATA_ROOT and the user's home."""
    root, rel = _split(path, data_root, home)
    if root == ".":
        return rel
    return f"{root}/{rel}" if rel else root


def portable_song(song: str, **roots: Any) -> str:
    """A song id (a file path, or NAME:path when several sources are pooled) made portable."""
    m = _SOURCE_PREFIX.match(song)
    if m:
        return f"{m.group(1)}:{portable_path(m.group(2), **roots)}"
    return portable_path(song, **roots) if os.path.isabs(song) else song


def fingerprint(path: str | os.PathLike[str]) -> tuple[str | None, int]:
    """("sha256:...", number of files) of what a folder holds (or of one file); (None, 0)
    when it does not exist. Symbolic links are followed, hidden files skipped."""
    p = Path(path)
    if p.is_file():
        entries = [(p.name, p)]
    elif p.is_dir():
        entries = []
        for dirpath, dirnames, filenames in os.walk(p, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in filenames:
                if not f.startswith("."):
                    full = Path(dirpath, f)
                    entries.append((full.relative_to(p).as_posix(), full))
    else:
        return None, 0
    lines = []
    for rel, full in sorted(entries):
        try:
            if full.suffix.lower() == ".csv":
                what = "sha256=" + hashlib.sha256(full.read_bytes()).hexdigest()
            else:
                what = f"size={full.stat().st_size}"
        except OSError:  # a dangling link
            what = "missing"
        lines.append(f"{rel}\t{what}")
    return "sha256:" + hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest(), len(lines)


def data_location(path: str | os.PathLike[str], **roots: Any) -> dict[str, Any]:
    """{"path": portable path, "fingerprint": "sha256:...", "files": N} of a data folder."""
    digest, files = fingerprint(path)
    return {"path": portable_path(path, **roots), "fingerprint": digest, "files": files}
