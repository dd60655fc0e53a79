"""The torrent assembled from per-file hashes (pipeline/export/torrentfiles.py, torrent.assemble) is
byte for byte libtorrent's full build (torrent.make) of the same tree, and a snapshot's torrent is
hashed only for the files no earlier torrent had (issue 15, item 4)."""

from __future__ import annotations

import random

import pytest

from pipeline.export import torrent
from pipeline.export.torrentfiles import FileHashCache, file_hashes
from tests.hostile.test_formats import EXTENDING_TREE, _extending_tree

PL = torrent.PIECE_LENGTH
SEED = "http://127.0.0.1:8080/ipfs/"

TREES = {
    "extending names": EXTENDING_TREE,
    "a 0-byte file first and last": {"a/empty": 0, "b": 1000, "z/empty": 0},
    "a file of exactly one piece": {"one": PL, "x/two": 2 * PL, "y": 10},
    "the last file ends on a piece boundary": {"a": 1000, "b/c": 3 * PL + 5, "z": 4 * PL},
    "one file with a tail": {"only.whl": 3 * PL + 17},
    "one file of exactly one piece": {"only.whl": PL},
    "one small file": {"index.html": 5},
    "one file under a directory": {"simple/p/p-1.0-py3-none-any.whl": 2 * PL + 1},
}


def _write(top, spec, seed=52):
    rnd = random.Random(seed)
    for rel, size in spec.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(rnd.randbytes(size))
    return top


def _assembled(top):
    files = [(p.relative_to(top).as_posix(), file_hashes(p, PL)) for p in top.rglob("*") if p.is_file()]
    random.Random(1).shuffle(files)  # the order it is given does not matter
    return torrent.assemble(top.name, files, SEED)


@pytest.mark.parametrize("name", TREES)
def test_the_assembled_torrent_is_the_full_build(tmp_path, name):
    top = _extending_tree(tmp_path) if name == "extending names" else _write(tmp_path / "bafyroot", TREES[name])
    data = _assembled(top)
    assert data == torrent.make(top, SEED)
    info = torrent.read(data)
    assert info.name == "bafyroot" and info.total_size >= sum(TREES[name].values())


def test_file_hashes_depend_only_on_the_bytes(tmp_path):
    data = random.Random(3).randbytes(2 * PL + 99)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.whl").write_bytes(data)
    (tmp_path / "b" / "other-name").write_bytes(data)
    one, two = file_hashes(tmp_path / "a" / "x.whl", PL), file_hashes(tmp_path / "b" / "other-name", PL)
    assert one == two and one.length == len(data)
    assert len(one.v1_pieces) == 3 * 20 and len(one.layer) == 3 * 32 and len(one.v1_tail) == 20


def test_a_snapshot_torrent_is_the_full_build_and_hashes_only_new_files(world, tmp_path):
    from tests.test_snapshot_incremental import _snapshot

    snap, _, _ = _snapshot(world, with_formats=True)
    logs: list[str] = []
    path, info = torrent.write(world.store, snap.root, "http://gw.test", log=logs.append)
    full = torrent.make(torrent.unpack(world.store, snap.root, tmp_path / "full"), "http://gw.test/ipfs/")
    assert path.read_bytes() == full
    assert len(info.pieces_roots) > 10
    (line,) = logs
    assert line.startswith(f"torrent: {len(info.pieces_roots)} files, ")
    hashed, cached = int(line.split(", ")[1].split()[0]), int(line.split(", ")[2].split()[0])
    # the first torrent hashes every distinct content once (a file's twin is found in the cache)
    assert hashed + cached == len(info.pieces_roots) and hashed == len(set(info.pieces_roots.values()))
    # one wheel changed: only the files whose bytes changed are hashed again
    entries = len(list(FileHashCache(world.store, PL).cache.dir.iterdir()))
    changed, _, _ = _snapshot(world, with_formats=True, **{"extra.py": "X = 1\n"})
    logs.clear()
    path2, info2 = torrent.write(world.store, changed.root, "http://gw.test", log=logs.append)
    full2 = torrent.make(torrent.unpack(world.store, changed.root, tmp_path / "full2"), "http://gw.test/ipfs/")
    assert path2.read_bytes() == full2 and info2.info_hash_v2 != info.info_hash_v2
    new = {p for p, r in info2.pieces_roots.items() if info.pieces_roots.get(p) != r}
    assert any(p.endswith(".whl") for p in new)
    (line,) = [m for m in logs if m.startswith("torrent: ")]
    hashed_now = int(line.split(", ")[1].split()[0])
    # every file whose bytes no earlier torrent had, each content once; nothing else
    assert hashed_now == len(set(info2.pieces_roots.values()) - set(info.pieces_roots.values()))
    assert not any(p.startswith("simple/tiny-app/") and p.endswith(".whl") for p in new)
    assert len(list(FileHashCache(world.store, PL).cache.dir.iterdir())) == entries + hashed_now


@pytest.mark.integration
def test_a_libtorrent_session_rechecks_the_assembled_torrent(tmp_path):
    """A real session verifies every piece (v1 and v2) of the assembled torrent against the files; a
    changed byte fails the recheck."""
    import libtorrent as lt

    from tests.test_formats import _lt_session, _wait

    top = _write(tmp_path / "seed" / "bafyroot", {**TREES["the last file ends on a piece boundary"],
                                                  **TREES["a file of exactly one piece"], "e/empty": 0})
    data = _assembled(top)
    session = _lt_session(lt)
    handle = session.add_torrent({"ti": lt.torrent_info(data), "save_path": str(top.parent), "url_seeds": []})
    handle.force_recheck()
    status = _wait(handle, lambda s: s.state == lt.torrent_status.seeding)
    assert status.progress == 1.0 and status.total_wanted_done == status.total_wanted
    victim = top / "b" / "c"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    handle.force_recheck()
    status = _wait(handle, lambda s: s.state not in (lt.torrent_status.checking_files,
                                                      lt.torrent_status.checking_resume_data) and s.progress < 1.0)
    assert status.progress < 1.0
