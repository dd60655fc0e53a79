"""Per-wheel verdicts (issue 13): only the wheel a rebuild was compared with carries its verdict; the
others are `not-rebuilt` with the reason; `rebuild = false` publishes upstream's bytes labelled as such;
accept-differs reasons are published. Checked in what users see: the status page, wheelproof.json and
the PEP 691 project JSON."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pipeline.export.ipfs.unixfs import V0_2015, cid_of_file
from pipeline.export.snapshot import VERDICT_KEY, SnapshotRefused, render, select
from pipeline.model.declaration import load
from pipeline.realise.fetch import fetch
from pipeline.realise.rebuild import build, load_record
from pipeline.wheel.facts import facts_for
from tests.conftest import build_record


def published(world, decl, record):
    store = world.store
    for w in decl.wheels:
        fetch(store, w, what=str(decl.path))
    out = select({decl.canonical_name: decl}, {decl.canonical_name: record},
                 lambda d, w: facts_for(store, w.sha256, w.filename).metadata or b"",
                 lambda w: str(cid_of_file(store.read_bytes(w.sha256), V0_2015)))
    tree = render(out, lambda a: store.verified_path(a.sha256), lambda w: store.read_bytes(w.metadata_sha256))
    return out, tree


def test_a_wheel_the_rebuild_was_not_compared_with_is_not_rebuilt_with_the_reason(world):
    decl = world.declare_tiny()
    record = build_record("d" * 64, "identical", "tiny", upstream="tiny-1.0-cp311-cp311-win_amd64.whl")
    (w,), tree = published(world, decl, record)
    assert w.verdict == "not-rebuilt"
    assert "another platform" in w.reason and "tiny-1.0-cp311-cp311-win_amd64.whl, was identical" in w.reason
    entry = json.loads(tree["simple"]["tiny"]["index.json"])["files"][0]
    assert entry[VERDICT_KEY] == {"verdict": "not-rebuilt", "reason": w.reason}
    manifest = json.loads(tree["wheelproof.json"])["published"][0]
    assert manifest["verdict"] == "not-rebuilt" and manifest["reason"] == w.reason
    assert 'class="not-rebuilt">not-rebuilt<' in tree["index.html"].decode()


def test_the_compared_wheel_carries_the_rebuild_verdict_and_no_reason(world):
    decl = world.declare_tiny()
    (w,), tree = published(world, decl, build_record("d" * 64, "equivalent", "tiny", decl.wheels[0].filename))
    assert (w.verdict, w.reason) == ("equivalent", None)
    assert json.loads(tree["simple"]["tiny"]["index.json"])["files"][0][VERDICT_KEY] == {"verdict": "equivalent"}


def test_accept_differs_reason_is_published(world):
    decl = replace(world.declare_tiny(), accept_differs="only the RECORD order differs")
    (w,), tree = published(world, decl, build_record("d" * 64, "differs", "tiny", decl.wheels[0].filename))
    assert w.verdict == "differs" and "only the RECORD order differs" in w.reason
    assert "only the RECORD order differs" in tree["index.html"].decode()


def test_rebuild_false_publishes_upstream_bytes_labelled_and_is_recorded_without_a_build(world):
    decl = world.declare_tiny()
    decl.path.write_text('rebuild = false\nrebuild-reason = "needs a Rust toolchain the sandbox lacks"\n'
                         + decl.path.read_text())
    decl = load(decl.path, world.declarations)
    assert decl.no_rebuild == "needs a Rust toolchain the sandbox lacks"
    record = build(decl, world.store, log=lambda m: None)
    assert record.verdict == "not-rebuilt" and record.output is None and record.builder_result == {}
    assert load_record(world.store, record.derivation_id) == record
    (w,), tree = published(world, decl, record)
    assert w.verdict == "not-rebuilt" and "rebuild = false" in w.reason and "Rust" in w.reason
    assert w.wheel.sha256 == decl.wheels[0].sha256   # upstream's bytes
    page = tree["index.html"].decode()
    assert "rebuild = false" in page and "needs a Rust toolchain the sandbox lacks" in page


def test_a_not_rebuilt_record_without_rebuild_false_is_refused(world):
    decl = world.declare_tiny()
    record = replace(build_record("d" * 64, "identical", "tiny", decl.wheels[0].filename), verdict="not-rebuilt")
    with pytest.raises(SnapshotRefused, match="does not say rebuild = false"):
        published(world, decl, record)
