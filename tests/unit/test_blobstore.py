"""The claim-check store: a key from a message can only name a file inside the store."""

import re

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
