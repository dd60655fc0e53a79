"""Releases: signed (stock minisign verifies), chained, logged, comparable; tampering is detected."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess

import pytest

from pipeline.trust import tlog
from pipeline.trust.release import ReleaseError, Releases, prove_consistency, prove_inclusion, verify_release
from pipeline.trust.signing import SecretKey, SignatureError, minisign_sign, minisign_verify, write_keypair

from .test_snapshot import tiny_snapshot

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def published_of(decls, snap_published):
    return [{"project": w.project, "version": w.version, "filename": w.wheel.filename, "sha256": w.wheel.sha256,
             "verdict": w.verdict, "tests": None} for w in snap_published]


@pytest.fixture
def key(tmp_path):
    return write_keypair(tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub")


def release_once(world, rel, key, **extra_files):
    snap, decls, published = tiny_snapshot(world, **extra_files)
    return snap, rel.publish(key, snap.root, snap.car_path, published_of(decls, published),
                             {"wheels": len(published)}, "abc123", NOW, refuse_inside=[world.store_root],
                             key_path=world.root / "keys" / "release.key")


def test_release_is_signed_and_verifiable_by_stock_minisign(world, key, tmp_path):
    rel = Releases(world.root / "releases")
    snap, (path, manifest) = release_once(world, rel, key)
    assert manifest["sequence"] == 1 and manifest["previous"] is None and manifest["root"] == str(snap.root)
    assert manifest["car"]["sha256"] == snap.car_sha256 and manifest["declarations_commit"] == "abc123"
    assert shutil.which("minisign"), "stock minisign (Debian package, installed by `make test`) is required"
    out = subprocess.run(["minisign", "-V", "-p", str(rel.root / "wheelproof.pub"), "-m", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "wheelproof release 1" in out.stdout
    verified = verify_release(path, path.with_suffix(".json.minisig"), snap.car_path, rel.public_key(),
                              log=lambda m: None)
    assert verified == manifest
    assert "ipfs://" + str(snap.root) in (rel.root / "feed.atom").read_text()
    assert not list(world.store_root.rglob("*.key")) and not list(rel.root.rglob("*.key"))


def test_chain_log_and_diff(world, key):
    rel = Releases(world.root / "releases")
    first_snap, (first, m1) = release_once(world, rel, key)
    old_checkpoint = (rel.log / "checkpoint").read_text()
    second_snap, (second, m2) = release_once(world, rel, key, **{"extra.py": "X = 1\n"})
    assert m2["sequence"] == 2 and m2["previous"]["root"] == m1["root"]
    assert m2["changes"]["bytes_changed"][0]["project"] == "tiny-lib"
    assert "1 bytes changed" in m2["changes"]["summary"]
    old, new, proof = prove_consistency(rel, key.public, old_checkpoint)
    assert (old.size, new.size) == (3, 6) and proof
    found = prove_inclusion(rel, key.public, lambda d: d["kind"] == "wheel" and d["release"] == m2["root"])
    assert len(found) == 2
    feed = (rel.root / "feed.atom").read_text()
    assert feed.count("<entry>") == 2 and "1 bytes changed" in feed
    with pytest.raises(ReleaseError, match="already released"):
        release_once(world, rel, key, **{"extra.py": "X = 1\n"})


def test_secret_key_inside_the_store_is_refused(world, tmp_path):
    rel = Releases(world.root / "releases")
    inside = world.store_root / "oops.key"
    key = write_keypair(inside, tmp_path / "oops.pub")
    snap, decls, published = tiny_snapshot(world)
    with pytest.raises(ReleaseError, match="inside"):
        rel.publish(key, snap.root, snap.car_path, published_of(decls, published), {}, None, NOW,
                    refuse_inside=[world.store_root], key_path=inside)


# -- tampering --------------------------------------------------------------------------------------

def test_changed_manifest_is_detected(world, key):
    rel = Releases(world.root / "releases")
    snap, (path, _) = release_once(world, rel, key)
    path.write_text(path.read_text().replace('"abc123"', '"evil99"'))
    with pytest.raises(ReleaseError, match="signature does not match"):
        verify_release(path, path.with_suffix(".json.minisig"), snap.car_path, rel.public_key(), log=lambda m: None)
    assert subprocess.run(["minisign", "-V", "-p", str(rel.root / "wheelproof.pub"), "-m", str(path)],
                          capture_output=True).returncode != 0


def test_changed_car_is_detected(world, key, tmp_path):
    rel = Releases(world.root / "releases")
    snap, (path, _) = release_once(world, rel, key)
    bad = tmp_path / "bad.car"
    data = bytearray(snap.car_path.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match="SHA-256 or size differs"):
        verify_release(path, path.with_suffix(".json.minisig"), bad, rel.public_key(), log=lambda m: None)


def test_wheel_swapped_in_the_store_is_detected(world, key):
    from pipeline.export.snapshot import walk
    from pipeline.model.errors import IntegrityError

    rel = Releases(world.root / "releases")
    snap, (path, manifest) = release_once(world, rel, key)
    wheel = manifest["wheels"][0]
    obj = world.store.object_path(wheel["sha256"])
    obj.chmod(0o644)
    obj.write_bytes(b"a different wheel")
    with pytest.raises(IntegrityError, match="corrupt"):
        walk(world.store, snap.root)  # what the gateway and any re-export read
    assert world.store.fsck()


def test_log_rewritten_to_drop_an_entry_is_detected(world, key):
    rel = Releases(world.root / "releases")
    release_once(world, rel, key)
    saved = (rel.log / "checkpoint").read_text()
    release_once(world, rel, key, **{"extra.py": "X = 1\n"})
    entries = rel.entries(6)
    shutil.rmtree(rel.log / "tile")
    tlog.write_tiles(rel.log, entries[:1] + entries[2:])  # drop one entry, keep the signed checkpoint
    with pytest.raises(ReleaseError, match="rewritten"):
        rel.verified_log(key.public)
    shutil.rmtree(rel.log / "tile")
    tlog.write_tiles(rel.log, entries[:1] + entries[2:] + entries[-1:])  # same size, one entry swapped
    with pytest.raises(ReleaseError, match="rewritten"):
        rel.verified_log(key.public)
    # and a log re-signed after dropping the entry is not consistent with a checkpoint someone saved
    from pipeline.trust.release import Checkpoint
    from pipeline.trust.signing import sign_note
    dropped = entries[:1] + entries[2:]
    shutil.rmtree(rel.log / "tile")
    tlog.write_tiles(rel.log, dropped)
    cp = Checkpoint(rel.origin, len(dropped), tlog.root([tlog.leaf_hash(e) for e in dropped]))
    (rel.log / "checkpoint").write_text(sign_note(key, rel.origin, cp.text()))
    with pytest.raises(ReleaseError, match="NOT consistent"):
        prove_consistency(rel, key.public, saved)
    # publishing refuses to sign on top of a log inconsistent with its last checkpoint
    (rel.log / "checkpoint").write_text(saved)
    with pytest.raises(ReleaseError):
        release_once(world, rel, key, **{"extra.py": "X = 2\n"})


def test_checkpoint_signed_by_another_key_is_rejected(world, key):
    from pipeline.trust.signing import sign_note

    rel = Releases(world.root / "releases")
    release_once(world, rel, key)
    text = (rel.log / "checkpoint").read_text().split("\n\n")[0] + "\n"
    (rel.log / "checkpoint").write_text(sign_note(SecretKey.generate(), rel.origin, text))
    with pytest.raises(ReleaseError, match="no valid signature"):
        rel.checkpoint(key.public)


def test_manifest_signed_by_another_key_is_rejected(tmp_path, key):
    other = SecretKey.generate()
    sig = minisign_sign(other, b"data", "t")
    with pytest.raises(SignatureError, match="another key"):
        minisign_verify(key.public, b"data", sig)
    assert minisign_verify(key.public, b"data", minisign_sign(key, b"data", "t")) == "t"


def test_diff_cli(world, key, tmp_path):
    rel_root = world.root / "releases"
    rel = Releases(rel_root)
    release_once(world, rel, key)
    release_once(world, rel, key, **{"extra.py": "X = 1\n"})
    env = {**world.env(), "WHEELPROOF_RELEASES": str(rel_root)}
    import sys
    out = subprocess.run([sys.executable, "-m", "pipeline", "diff", "1", "2"], env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert "! tiny-lib tiny_lib-2.0-py3-none-any.whl: bytes changed" in out.stdout
    doc = json.loads(subprocess.run([sys.executable, "-m", "pipeline", "diff", "1", "2", "--json"], env=env,
                                    capture_output=True, text=True).stdout)
    assert doc["bytes_changed"][0]["project"] == "tiny-lib" and doc["added"] == []
