"""No tracked document or report names a home, work or cache directory of some machine.

Documents and reports (Markdown, JSON) are read on other machines: a path such as
/home/ann/.cache/genre/render means nothing there and tells about the machine that wrote
it. Reports record data as $GENRE_DATA_ROOT/..., ~/... or .../parent/name
(shared/datapaths.py); documents say ~/.cache/genre, $CACHE or a path in the repository.
The same holds for the other text the repository ships and other machines run or read:
plain text, YAML, TOML and cfg settings, shell scripts (their comments included) and
Dockerfiles. Paths meant as they are, inside the containers, are allow-listed below.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from shared.settings import REPO_ROOT

MACHINE_PATH = re.compile(
    r"(?<![\w.~$%{}-])"  # not ~/..., $CACHE/..., ../..., a URL's host/path
    r"(/(?:home|root|work|tmp|Users|mnt|media|scratch|builds)/[^\s`'\"()\[\]<>,;|]*"
    r"|/(?:private/)?var/folders/[^\s`'\"()\[\]<>,;|]*"
    r"|[A-Za-z]:\\(?:Users|Documents and Settings)\\[^\s`'\"]*)"
)
# Meant as written: inside the images HOME is /tmp (deploy/Dockerfile: HOME, XDG_CACHE_HOME,
# KERAS_HOME), so these are the containers' own cache folders.
ALLOWED = re.compile(r"^/tmp/\.(cache|keras)(/|$)")


def machine_paths(text: str) -> list[str]:
    """The absolute home, work, temporary or cache paths in text that are not allow-listed."""
    return [m.group(1) for m in MACHINE_PATH.finditer(text) if not ALLOWED.match(m.group(1))]


# Documents and reports, and the settings, scripts and image recipes shipped beside them.
PATTERNS = ("*.md", "*.json", "*.txt", "*.yml", "*.yaml", "*.toml", "*.cfg", "*.sh", "*Dockerfile", "*.env", ".ci/run")


def documents() -> list[str]:
    """The files of PATTERNS that git tracks or would track (not ignored)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", *PATTERNS],
                         cwd=REPO_ROOT, capture_output=True, check=True).stdout
    return sorted({p for p in out.decode("utf-8", "surrogateescape").split("\0") if p})


@pytest.mark.parametrize("text, found", [
    ("features cached in /home/ann/.cache/genre/features", ["/home/ann/.cache/genre/features"]),
    ('"path": "/work/main/../cache/render/long"', ["/work/main/../cache/render/long"]),
    ("(/tmp/pytest-of-ann/x.wav)", ["/tmp/pytest-of-ann/x.wav"]),
    ("/Users/bob/music and /root/data", ["/Users/bob/music", "/root/data"]),
    ("/var/folders/xy/T/abc and /private/var/folders/q", ["/var/folders/xy/T/abc", "/private/var/folders/q"]),
    (r"C:\Users\ann\genre", [r"C:\Users\ann\genre"]),
    ("~/.cache/genre/blobs, $CACHE/render/long, ../shared/data, $GENRE_DATA_ROOT/render", []),
    ("tmpfs `/tmp`, XDG_CACHE_HOME=/tmp/.cache, /tmp/.keras, /data/blobs, /var/lib/kafka/data, /app", []),
    ("https://example.org/home/page and models/work/x", []),
])
def test_the_pattern_finds_machine_paths_and_nothing_else(text, found):
    assert machine_paths(text) == found


def test_documents_and_reports_hold_no_machine_paths():
    docs = documents()
    assert "README.md" in docs and any(d.endswith(".json") for d in docs)
    for kind in (".yaml", ".sh", ".txt", ".toml", "Dockerfile"):
        assert any(d.endswith(kind) for d in docs), f"no {kind} file among the documents checked"
    offenders = []
    for rel in docs:
        path = REPO_ROOT / rel
        if not path.is_file():  # deleted in the work tree, not yet in the index
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            offenders += [f"{rel}:{n}: {p}" for p in machine_paths(line)]
    assert not offenders, "machine paths in documents or reports:\n" + "\n".join(offenders)
