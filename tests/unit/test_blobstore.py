"""The claim-check store: a key from a message can only name a file inside the store."""

import hashlib
import re
import tempfile

import pytest

from shared import blobstore
from shared.blobstore import BlobNotFound, BlobStore

DIGEST = "0123456789abcdef" * 4
HOSTILE = [
    DIGEST + "\n",
    DIGEST + "/../../../../etc/passwd",
    "../../etc/passwd",
    "/etc/passwd",
]


def test_put_file_stores_under_the_digest_and_open_path_finds_it(tmp_path):
    src = tmp_path / "song.mp3"
    src.write_bytes(b"abc")
    store = BlobStore(tmp_path / "store")
    key, size = store.put_file(src)
    assert key == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" and size == 3
    assert store.open_path(key) == tmp_path / "store" / "ba" / key
    assert store.open_path(key).read_bytes() == b"abc"
    assert store.put_file(src) == (key, 3)  # idempotent
    with pytest.raises(BlobNotFound):
        store.open_path(DIGEST)


@pytest.mark.parametrize("key", HOSTILE)
def test_path_for_refuses_keys_that_are_not_exactly_a_digest(tmp_path, key):
    """path_for checks the key itself: a trailing newline or a path after a digest is refused."""
    store = BlobStore(tmp_path)
    assert store.path_for(DIGEST) == tmp_path / "01" / DIGEST
    with pytest.raises(ValueError):
        store.path_for(key)
    with pytest.raises(ValueError):
        store.open_path(key)


@pytest.mark.parametrize("key", [DIGEST + "/../../../../etc/passwd", DIGEST + "/../x", "..abc" + DIGEST])
def test_path_stays_in_the_store_even_if_the_key_check_is_weakened(tmp_path, monkeypatch, key):
    """Defence in depth: with a key regex that lets anything through, the containment check
    still refuses a key that resolves outside `<root>/<2 hex>/`."""
    monkeypatch.setattr(blobstore, "BLOB_KEY_RE", re.compile(r".*", re.S))
    store = BlobStore(tmp_path)
    assert store.path_for(DIGEST) == tmp_path / "01" / DIGEST
    with pytest.raises(ValueError, match="outside"):
        store.path_for(key)


@pytest.fixture
def temp_dirs(monkeypatch):
    """The folders the store makes its temporary files in, in call order."""
    dirs = []
    real_mkstemp = tempfile.mkstemp

    def spy(*args, **kw):
        dirs.append(kw.get("dir"))
        return real_mkstemp(*args, **kw)

    monkeypatch.setattr(blobstore.tempfile, "mkstemp", spy)
    return dirs


def test_put_file_creates_the_store_counts_every_block_and_writes_its_temp_file_inside(tmp_path, temp_dirs):
    """A store folder that does not exist yet is made; a file of several copy blocks is
    hashed and counted whole; the temporary copy lives in the store, so the final rename is
    atomic on one filesystem, and nothing is left behind."""
    data = bytes(range(256)) * (blobstore.COPY_BLOCK // 256 * 2 + 7)  # 2 blocks and a bit
    src = tmp_path / "big.flac"
    src.write_bytes(data)
    root = tmp_path / "a" / "b" / "store"
    store = BlobStore(root)
    key, size = store.put_file(src)
    assert (key, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert temp_dirs == [root]
    assert sorted(p.name for p in root.iterdir()) == [key[:2]]


def test_a_failed_put_leaves_no_temporary_file(tmp_path):
    store = BlobStore(tmp_path / "store")
    with pytest.raises(FileNotFoundError):
        store.put_file(tmp_path / "missing.mp3")
    assert list((tmp_path / "store").iterdir()) == []


def test_errors_say_what_is_wrong(tmp_path):
    store = BlobStore(tmp_path)
    with pytest.raises(ValueError, match=r"is not a blob key \(a SHA-256 hex digest\)"):
        store.path_for("../x")
    with pytest.raises(BlobNotFound, match=f"song {DIGEST[:12]}… is not in the shared store"):
        store.open_path(DIGEST)


def test_put_bytes_stores_like_put_file_atomically_inside_the_store(tmp_path, temp_dirs):
    """A song held in memory (a raw-audio record) lands under the same key a file of the
    same bytes gets, through a temporary file in the store; storing it again is a no-op."""
    data = bytes(range(256)) * 4097
    root = tmp_path / "new" / "store"
    store = BlobStore(root)
    key, size = store.put_bytes(data)
    assert (key, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert temp_dirs == [root]
    assert store.open_path(key).read_bytes() == data
    src = tmp_path / "same.mp3"
    src.write_bytes(data)
    assert store.put_file(src) == store.put_bytes(data) == (key, size)
    assert sorted(p.name for p in root.iterdir()) == [key[:2]] and [p.name for p in (root / key[:2]).iterdir()] == [key]


def test_put_bytes_of_nothing_is_the_empty_digest(tmp_path):
    key, size = BlobStore(tmp_path).put_bytes(b"")
    assert (key, size) == ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0)


def test_a_failed_put_bytes_leaves_no_temporary_file(tmp_path, monkeypatch):
    store = BlobStore(tmp_path / "store")

    def refuse(key):
        raise ValueError("no room")

    monkeypatch.setattr(store, "path_for", refuse)
    with pytest.raises(ValueError, match="no room"):
        store.put_bytes(b"abc")
    assert list((tmp_path / "store").iterdir()) == []
