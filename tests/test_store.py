"""The content-addressed store: atomic, verified, collectable, safe for several processes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.model.errors import IntegrityError, StoreError
from pipeline.store.local import Store


def test_put_and_verified_read(tmp_path):
    store = Store(tmp_path)
    digest = store.put_bytes(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert store.read_bytes(digest) == b"hello"
    assert oct(store.object_path(digest).stat().st_mode & 0o777) == "0o444"
    assert store.put_bytes(b"hello") == digest  # idempotent


def test_corruption_is_detected_on_read_and_by_fsck(tmp_path):
    store = Store(tmp_path)
    digest = store.put_bytes(b"payload")
    path = store.object_path(digest)
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="corrupt"):
        store.read_bytes(digest)
    with pytest.raises(IntegrityError):
        store.verified_path(digest)
    (problem,) = store.fsck()
    assert "corrupt" in str(problem) and digest in str(problem)


def test_commit_rejects_wrong_pins_and_leaves_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(IntegrityError), store.writer() as w:
        w.write(b"abc")
        w.commit(expected_sha256="0" * 64)
    assert list(store.iter_objects()) == [] and list(store.tmp.iterdir()) == []


def test_compressed_documents_and_refs(tmp_path):
    store = Store(tmp_path)
    leaf = store.put_bytes(b"leaf")
    doc = store.put_json({"kind": "x", "references": [leaf]})
    assert store.read_bytes(doc)[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame
    store.set_ref("builds", "abc", doc)
    assert store.get_ref("builds", "abc") == doc
    assert store.read_json(doc)["kind"] == "x"
    with pytest.raises(StoreError):
        store.set_ref("builds", "../escape", doc)
    with pytest.raises(StoreError):
        store.set_ref("builds", "dangling", "f" * 64)


def test_gc_keeps_what_roots_reach(tmp_path):
    store = Store(tmp_path)
    kept_leaf = store.put_bytes(b"kept by a record")
    pinned = store.put_bytes(b"kept by a declaration")
    garbage = store.put_bytes(b"garbage")
    record = store.put_json({"references": [kept_leaf]})
    store.set_ref("pins", "drv", record)  # any ref kind; builds/tests refs must hold real records
    removed = store.gc(extra_roots=[pinned]).removed
    assert removed == [garbage]
    assert {kept_leaf, pinned, record} == set(store.iter_objects())
    assert store.fsck() == []


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pipeline.store.local import Store
    store = Store(sys.argv[1])
    with store.writer() as w:
        w.write(b"x" * (1 << 20))
        print("writing", flush=True)
        for _ in range(1000):
            w.write(b"x" * (1 << 20))
            time.sleep(0.01)
        w.commit()
""")


def test_kill_in_the_middle_of_a_write_leaves_no_partial_object(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(tmp_path)
    assert list(store.iter_objects()) == []
    assert store.fsck() == []
    leftovers = list(store.tmp.iterdir())
    assert leftovers, "the killed writer's temp file should be what remains"
    store.gc(stale_tmp_seconds=0)
    assert list(store.tmp.iterdir()) == []


CONCURRENT_WRITER = textwrap.dedent("""
    import sys
    from pipeline.store.local import Store
    store = Store(sys.argv[1])
    for i in range(300):
        with store.shared():
            d = store.put_bytes(b"shared object %d" % (i % 50) + b"." * 5000)
            store.set_ref("pins", "r%d" % (i % 50), d)
""")


def test_two_processes_on_one_store(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER, str(tmp_path)]) for _ in range(2)]
    gc_store = Store(tmp_path)
    while any(p.poll() is None for p in procs):
        gc_store.gc()  # runs between writers' locked sections, never inside one
    assert all(p.returncode == 0 for p in procs)
    store = Store(tmp_path)
    assert store.fsck() == []
    assert len(list(store.list_refs("pins"))) == 50
    assert all(store.has(d) for _, _, d in store.list_refs("pins"))


def test_store_location_from_environment(tmp_path, monkeypatch):
    from pipeline.store.local import STORE_ENV, default_root

    monkeypatch.setenv(STORE_ENV, str(tmp_path / "shared"))
    assert default_root() == (tmp_path / "shared").resolve()
    assert os.fspath(Store().root) == os.fspath((tmp_path / "shared").resolve())
