"""The task graph as data, the evaluation cache and the up-to-date index."""

from __future__ import annotations

import os
import time

import pytest

from pipeline.model import declaration as declaration_module
from pipeline.model.errors import DeclarationError
from pipeline.model.records import encode
from pipeline.realise import evaluation as evaluation_module
from pipeline.realise.evaluation import Evaluation
from pipeline.realise.graph import Graph, Node, plan
from pipeline.realise.rebuild import derivation
from pipeline.store import refindex
from pipeline.store.local import Store
from pipeline.store.refindex import RefIndex
from tests.test_records import _record

TEST_TABLE = '\n[test]\nrequires = []\n'


@pytest.fixture
def two(world):
    world.declare_tiny("alpha", test_table=TEST_TABLE)
    world.declare_tiny("beta", dependencies=["alpha"])
    return world


def test_plan_is_a_pure_function_of_the_declarations(two):
    decls = Evaluation(two.declarations, two.store).declarations()
    g = plan(decls)
    assert [n.key for n in g.nodes] == ["build:alpha", "test:alpha", "build:beta", "check", "snapshot"]
    assert g["build:alpha"].id == derivation(decls["alpha"]).id
    assert g["test:alpha"].deps == ("build:alpha",)
    assert set(g["snapshot"].deps) == {"build:alpha", "build:beta", "test:alpha", "check"}
    assert plan(decls) == g  # same inputs, same graph
    order = [n.key for n in g.order()]
    assert order.index("test:alpha") > order.index("build:alpha") and order[-1] == "snapshot"


def test_order_respects_dependencies_whatever_the_listing_order():
    g = Graph((Node("snapshot", "", "", ("b", "a"), ""), Node("b", "", "", ("a",), ""), Node("a", "", "", (), "")))
    assert [n.key for n in g.order()] == ["a", "b", "snapshot"]


def test_evaluation_is_cached_and_an_edited_file_is_always_reread(two, monkeypatch):
    first = Evaluation(two.declarations, two.store).graph()
    parses = []
    real = declaration_module.read_one
    monkeypatch.setattr(declaration_module, "read_one", lambda *a: parses.append(a[0]) or real(*a))
    assert Evaluation(two.declarations, two.store).graph() == first
    assert parses == []  # nothing re-parsed: the cached graph served
    # Edit one file and keep its size and mtime, as a fast editor or a checkout might.
    path = two.declarations / "be" / "beta.toml"
    st = path.stat()
    text = path.read_text()
    path.write_text(text.replace("source-date-epoch = 1700000000", "source-date-epoch = 1700000001"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = Evaluation(two.declarations, two.store).graph()
    assert parses == [path]  # only the edited file was parsed again
    assert again["build:beta"].id != first["build:beta"].id and again["build:alpha"] == first["build:alpha"]


def test_a_racy_entry_is_rehashed_until_it_settles(two, monkeypatch):
    Evaluation(two.declarations, two.store).graph()  # files were written just now: every entry is racy
    index = Evaluation(two.declarations, two.store)._read_index()
    assert index is not None and all(e.racy for e in index.files.values())
    monkeypatch.setattr(evaluation_module, "RACY_SECONDS", 0.0)
    time.sleep(0.01)
    e = Evaluation(two.declarations, two.store)
    e.declarations()  # re-evaluated with a zero racy window: entries settle
    settled = Evaluation(two.declarations, two.store)._read_index()
    assert settled is not None and not any(x.racy for x in settled.files.values())


def test_problems_are_reported_through_the_cache_and_a_new_file_is_seen(two):
    Evaluation(two.declarations, two.store).graph()
    bad = two.declarations / "ga" / "gamma.toml"
    bad.parent.mkdir()
    bad.write_text('schema = 1\nname = "gamma"\n')
    with pytest.raises(DeclarationError) as e:
        Evaluation(two.declarations, two.store).graph()
    assert any("gamma.toml" in str(p) for p in e.value.problems)
    bad.unlink()
    assert "build:gamma" not in Evaluation(two.declarations, two.store).graph()


def test_a_corrupt_cache_is_rebuilt(two):
    e = Evaluation(two.declarations, two.store)
    g = e.graph()
    for f in e.cache_dir.iterdir():
        f.write_bytes(b"not a pickle")
    assert Evaluation(two.declarations, two.store).graph() == g


def test_the_index_answers_without_reading_records_and_sees_new_refs(tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    good, failed = _record("a" * 64), _record("b" * 64, verdict="failed")
    for r in (good, failed):
        store.set_ref("builds", r.id, store.put_json(encode(r)))
    reads = []

    def classify(name, digest):
        reads.append(name)
        return store.read_json(digest)["verdict"] != "failed"

    monkeypatch.setattr(refindex, "RACY_SECONDS", 0.0)
    index = RefIndex(store, "builds", classify)
    assert index.done("a" * 64) and not index.done("b" * 64) and not index.done("c" * 64)
    assert sorted(reads) == ["a" * 64, "b" * 64]
    reads.clear()
    assert RefIndex(store, "builds", classify).done("a" * 64)
    assert reads == []  # answered from the index file
    time.sleep(0.01)
    rebuilt = _record("b" * 64)
    store.set_ref("builds", rebuilt.id, store.put_json(encode(rebuilt)))
    assert RefIndex(store, "builds", classify).done("b" * 64)
    assert reads == ["b" * 64]  # only the changed ref was classified again


def test_a_racy_directory_is_rescanned(tmp_path):
    store = Store(tmp_path / "store")
    store.set_ref("builds", "a" * 64, store.put_json(encode(_record("a" * 64))))
    classify = lambda name, digest: True  # noqa: E731
    assert RefIndex(store, "builds", classify).done("a" * 64)
    # A second ref lands within the racy window (the same mtime tick is possible): still seen.
    store.set_ref("builds", "c" * 64, store.put_json(encode(_record("c" * 64))))
    assert RefIndex(store, "builds", classify).done("c" * 64)


def test_a_no_op_doit_build_runs_nothing_and_an_edit_rebuilds_only_that(two):
    first = two.doit("build")
    assert first.returncode == 0, first.stdout + first.stderr
    assert ".  build:alpha" in first.stdout and ".  build:beta" in first.stdout
    second = two.doit("build")
    assert "-- build:alpha" in second.stdout and "-- build:beta" in second.stdout
    path = two.declarations / "be" / "beta.toml"
    path.write_text(path.read_text().replace("source-date-epoch = 1700000000", "source-date-epoch = 1700000001"))
    third = two.doit("build")
    assert "-- build:alpha" in third.stdout and ".  build:beta" in third.stdout, third.stdout + third.stderr
