"""Hostile input at the store's boundary: what killed builds leave, stray entries, a full disk.

Each attack is contained: a clear message (or a report), nothing deleted that is not garbage, nothing
half-written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pipeline.model.errors import StoreError
from pipeline.store.local import Store, atomic_write

OLD = time.time() - 7200  # older than gc's default one-hour margin


def _age(path: Path) -> None:
    """Make a tree look abandoned two hours ago (symlinks themselves, never their targets)."""
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (OLD, OLD), follow_symlinks=False)
    os.utime(path, (OLD, OLD), follow_symlinks=False)


def _killed_build_leftovers(store: Store, outside: Path) -> list[Path]:
    """What a build killed mid-way leaves in tmp/: a nested tree (some of it read-only), a symlink
    out of the store, a half-written object, a fifo."""
    build = store.tmp / "build-abc123"
    (build / "src" / "pkg").mkdir(parents=True)
    (build / "src" / "pkg" / "mod.py").write_text("X = 1\n")
    (build / "src" / "link-out").symlink_to(outside)
    (build / "src").chmod(0o500)  # a read-only directory
    (build / "locked").mkdir()
    (build / "locked" / "f").write_text("f")
    (build / "locked").chmod(0o000)
    half = store.tmp / "obj-half"
    half.write_bytes(b"x" * 1000)
    escape = store.tmp / "ref-link"
    escape.symlink_to(outside)
    fifo = store.tmp / "test-fifo"
    os.mkfifo(fifo)
    entries = [build, half, escape, fifo]
    for e in entries:
        _age(e) if e.is_dir() and not e.is_symlink() else os.utime(e, (OLD, OLD), follow_symlinks=False)
    return entries


def test_gc_removes_directories_and_odd_files_a_killed_build_left_in_tmp(world, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not the store's")
    store = world.store
    _killed_build_leftovers(store, outside)
    fresh = store.tmp / "declare-fresh"  # recent: a writer that does not lock gets the margin
    fresh.mkdir()
    out = world.cli("gc")
    assert out.returncode == 0, out.stderr
    assert "4 leftovers in tmp/" in out.stdout and "Traceback" not in out.stderr
    assert [p.name for p in store.tmp.iterdir()] == ["declare-fresh"]
    assert outside.read_text() == "not the store's"  # symlinks are removed, never followed


def test_gc_leaves_stray_entries_outside_tmp_alone_and_reports_them(world):
    store = world.store
    kept = store.put_bytes(b"kept")
    store.set_ref("pins", "kept", kept)  # not a record kind: fsck checks records behind builds/tests refs
    garbage = store.put_bytes(b"garbage")
    strays = [store.objects / "ab" / "README", store.objects / "notashard",
              store.objects / garbage[:2] / ("0" * 64), store.refs / "builds" / "subdir",
              store.refs / "loose-file"]
    strays[0].parent.mkdir()
    strays[0].write_text("hello")
    strays[1].write_text("x")
    strays[2].write_text("object in the wrong shard")
    strays[3].mkdir(parents=True)
    strays[4].write_text("x")
    report = store.gc()
    assert report.removed == [garbage] and store.has(kept)
    assert sorted(p.path for p in report.skipped) == sorted(strays)
    assert all(p.exists() for p in strays)
    assert {p.path for p in store.fsck()} == set(strays)
    out = world.cli("gc")
    assert out.returncode == 0 and out.stderr.count("gc: left alone:") == len(strays)
    assert "README: stray entry in the object directory" in out.stderr


HOLDER = textwrap.dedent("""
    import sys, tempfile
    from pipeline.store.local import Store
    store = Store(sys.argv[1])
    with store.shared():                       # a build: the lock is taken before its first fetch
        with store.shared():                   # a nested holder (fetch inside the build) ...
            digest = store.put_bytes(b"built, not yet referenced")
        # ... has exited: the outer hold must still keep gc out
        with tempfile.TemporaryDirectory(dir=store.tmp, prefix="build-") as work:
            print(digest, work, flush=True)
            sys.stdin.readline()               # the test lets the build finish
            store.set_ref("builds", "held", digest)
""")


def test_gc_never_collects_what_a_running_build_holds(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    digest, work = holder.stdout.readline().split()
    _age(Path(work))
    store = Store(tmp_path)
    result: list = []
    gc = threading.Thread(target=lambda: result.append(store.gc(stale_tmp_seconds=0)))
    gc.start()
    gc.join(1.0)
    try:
        assert gc.is_alive(), "gc ran while a build held the shared lock"
        assert Path(work).is_dir() and store.has(digest)
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
        gc.join(30)
    assert result and digest not in result[0].removed and store.has(digest)
    assert store.get_ref("builds", "held") == digest


def test_shared_is_reentrant_in_one_process(tmp_path):
    store, other = Store(tmp_path), Store(tmp_path)
    probe = ("import fcntl, sys; f = open(sys.argv[1], 'rb'); "
             "sys.exit(0 if fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB) is None else 1)")

    def gc_could_run() -> bool:
        return subprocess.run([sys.executable, "-c", probe, str(tmp_path / "lock")],
                              capture_output=True).returncode == 0

    with store.shared():
        with other.shared():
            assert not gc_could_run()
        assert not gc_could_run(), "the inner exit released the outer hold"
    assert gc_could_run()


# -- a full disk ----------------------------------------------------------------------------------

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_committing_an_object_is_a_clear_store_error(tmp_path, monkeypatch):
    store = Store(tmp_path)
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(StoreError, match="no space left on the device") as info:
        store.put_bytes(b"payload")
    assert str(store.root) in str(info.value)
    assert list(store.tmp.iterdir()) == [] and list(store.iter_objects()) == []
    with pytest.raises(StoreError, match=r"ref builds/x: write failed: no space left"):
        monkeypatch.undo()
        digest = store.put_bytes(b"payload")
        monkeypatch.setattr(os, "fsync", _enospc)
        store.set_ref("builds", "x", digest)
    assert list(store.tmp.iterdir()) == [] and store.get_ref("builds", "x") is None


def test_full_disk_in_atomic_write_names_the_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "releases" / "latest"
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(StoreError, match=f"{target}: write failed: no space left"):
        atomic_write(target, b"x")
    assert list(target.parent.iterdir()) == []


FULL_DISK = textwrap.dedent("""
    import json, os, sys
    from pipeline.model.errors import StoreError
    from pipeline.store.local import Store
    store = Store("/mnt/store")
    out = {}
    try:
        store.put_bytes(os.urandom(1 << 20))     # 1 MiB into a 256 KiB filesystem
    except StoreError as e:
        out["error"] = str(e)
    try:
        store.put_file(__import__("pathlib").Path(sys.argv[1]))
    except StoreError as e:
        out["error_file"] = str(e)
    out["tmp"] = os.listdir(store.tmp)
    out["objects"] = list(store.iter_objects())
    print(json.dumps(out))
""")


@pytest.mark.sandbox
def test_a_really_full_disk(tmp_path):
    """A real ENOSPC: the store on a 256 KiB tmpfs (bubblewrap's --size, no root needed)."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20))
    cmd = ["bwrap", "--dev-bind", "/", "/", "--size", str(256 << 10), "--tmpfs", "/mnt",
           sys.executable, "-c", FULL_DISK, str(big)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in ("error", "error_file"):
        assert out[key].startswith("store /mnt/store: object obj-") and "no space left on the device" in out[key]
    assert out["tmp"] == [] and out["objects"] == []
    assert hashlib.sha256(big.read_bytes()).hexdigest()  # the source is untouched
