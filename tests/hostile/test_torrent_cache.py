"""A poisoned per-file torrent hash (``<store>/cache/torrent-files``, pipeline/export/torrentfiles.py):
a wrong pieces root or piece layer is caught when libtorrent loads the assembled torrent, a malformed
entry or one whose length is not the file's is refused naming the cache file; each with a clear
message, and no torrent is written."""

from __future__ import annotations

import random

import pytest

from pipeline.export import torrent
from pipeline.export.derived import DerivedCache
from pipeline.export.ipfs.unixfs import V1_2025
from pipeline.export.snapshot import build
from pipeline.export.torrentfiles import FileHashCache, FileHashError
from pipeline.model.errors import WheelproofError
from pipeline.store.local import Store

GATEWAY = "http://gw.test"


def _setup(tmp_path):
    store = Store(tmp_path / "store")
    rng = random.Random(47)
    tree = {"index.html": b"<p>hi</p>",
            "simple": {"big": {"big-1.0-py3-none-any.whl": rng.randbytes(V1_2025.chunk_size + 3 * torrent.PIECE_LENGTH),
                               "index.html": b"<a>big</a>"},
                       "small": {"small-1.0-py3-none-any.whl": rng.randbytes(3 * torrent.PIECE_LENGTH + 5)}}}
    snap = build(store, tree, log=lambda m: None)
    path, info = torrent.write(store, snap.root, GATEWAY)
    good = path.read_bytes()
    path.unlink()  # the next write assembles it again from the per-file cache
    return store, snap.root, path, info, good


def _poison(store, info, rel, **change):
    """Rewrite the cache entry of the file at ``rel`` as a store writer could: a valid document,
    properly hashed and pointed at, saying something else."""
    cache = FileHashCache(store, torrent.PIECE_LENGTH)
    root = bytes.fromhex(info.pieces_roots[rel])
    for pointer in cache.cache.dir.iterdir():
        doc = cache.cache.get(pointer.name)
        assert doc is not None
        if doc["pieces_root"] == root.hex():
            new = {k: v(doc[k]) if callable(v) else v for k, v in change.items()}
            DerivedCache(store, "torrent-files").put(pointer.name, {**doc, **new})
            return pointer
    raise AssertionError(f"no cache entry for {rel}")


@pytest.mark.parametrize("rel", ["simple/big/big-1.0-py3-none-any.whl", "simple/small/small-1.0-py3-none-any.whl"])
@pytest.mark.parametrize("field", ["pieces_root", "layer"])
def test_a_wrong_pieces_root_or_layer_is_caught_and_nothing_is_written(tmp_path, rel, field):
    store, root, path, info, good = _setup(tmp_path)
    _poison(store, info, rel, **{field: lambda value: ("ff" if value[:2] != "ff" else "00") + value[2:]})
    with pytest.raises(WheelproofError) as e:
        torrent.write(store, root, GATEWAY)
    msg = str(e.value)
    assert "does not load" in msg and "cache/torrent-files" in msg and "remove that directory" in msg
    assert not path.exists()
    # with the cache removed, the torrent is made again from the blocks, and is the right one
    import shutil

    shutil.rmtree(store.root / "cache" / "torrent-files")
    path2, _ = torrent.write(store, root, GATEWAY)
    assert path2.read_bytes() == good


def test_a_malformed_entry_is_refused_naming_the_cache_file(tmp_path):
    store, root, path, info, _ = _setup(tmp_path)
    pointer = _poison(store, info, "simple/small/small-1.0-py3-none-any.whl", v1_pieces="00" * 20)
    with pytest.raises(FileHashError) as e:
        torrent.write(store, root, GATEWAY)
    assert str(pointer) in str(e.value) and "v1_pieces has 20 bytes" in str(e.value)
    assert not path.exists()


def test_an_entry_whose_length_is_not_the_files_is_refused(tmp_path):
    store, root, path, info, _ = _setup(tmp_path)
    # the multi-chunk wheel is a dag-pb file node: its length is checked against the node
    pointer = _poison(store, info, "simple/big/big-1.0-py3-none-any.whl",
                      length=V1_2025.chunk_size + 3 * torrent.PIECE_LENGTH - 1)
    with pytest.raises(WheelproofError) as e:
        torrent.write(store, root, GATEWAY)
    assert str(pointer) in str(e.value)
    assert not path.exists()


def test_an_entry_whose_length_is_not_a_raw_leafs_is_refused(tmp_path):
    """A raw-leaf file is not read on a hit; its block's size is still compared with the entry's length
    (an entry one byte longer is otherwise consistent: same pieces, same tail, libtorrent loads it)."""
    store, root, path, info, _ = _setup(tmp_path)
    pointer = _poison(store, info, "simple/small/small-1.0-py3-none-any.whl", length=3 * torrent.PIECE_LENGTH + 6)
    with pytest.raises(WheelproofError) as e:
        torrent.write(store, root, GATEWAY)
    assert str(pointer) in str(e.value) and "says 786438 bytes" in str(e.value)
    assert not path.exists()
