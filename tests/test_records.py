"""Typed records: every read is checked field by field, and a ref must name the record's own id."""

from __future__ import annotations

import pytest

from pipeline.model.records import (
    BuildRecord,
    RecordError,
    TestRecord,
    check_ref,
    decode,
    encode,
)
from pipeline.realise.rebuild import load_record
from pipeline.store.local import Store
from tests.conftest import build_record


def _record(drv_id: str, verdict: str = "identical") -> BuildRecord:
    return build_record(drv_id, verdict)


def test_a_record_survives_encoding_unchanged():
    record = _record("a" * 64)
    doc = encode(record)
    assert doc["schema"] == 1 and doc["kind"] == "build-record"
    assert "comparison" not in doc  # None fields are left out
    assert decode(BuildRecord, doc, "x") == record


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("verdict"), "missing field 'verdict'"),
    (lambda d: d.update(verdict="great"), "verdict 'great' is not one of"),
    (lambda d: d.update(timings={"total": "slow"}), "timings.total: expected a number"),
    (lambda d: d.update(references="abc"), "references: expected a list"),
    (lambda d: d.update(exit_status=True), "exit_status: expected int, found bool"),
    (lambda d: d.update(output=None), "identical record has no output wheel"),
    (lambda d: d.update(surprise=1), "unknown field 'surprise'"),
    (lambda d: d.update(kind="test-record"), "expected a build-record"),
    (lambda d: d.update(schema=2), "expected a build-record (schema 1)"),
    (lambda d: d["upstream"].pop("sha256"), "upstream: missing field 'sha256'"),
])
def test_a_malformed_record_is_refused_naming_the_field(mutate, message):
    doc = encode(_record("a" * 64))
    mutate(doc)
    with pytest.raises(RecordError, match="where"):
        decode(BuildRecord, doc, "where")
    with pytest.raises(RecordError) as e:
        decode(BuildRecord, doc, "where")
    assert message in str(e.value)


def test_a_test_record_is_not_a_build_record():
    doc = encode(_record("a" * 64))
    with pytest.raises(RecordError, match="expected a test-record"):
        decode(TestRecord, doc, "x")


def test_a_ref_must_name_the_records_own_id():
    record = _record("a" * 64)
    assert check_ref(record, "a" * 64, "x") is record
    with pytest.raises(RecordError, match=f"the ref names {'b' * 64} but the record is for {'a' * 64}"):
        check_ref(record, "b" * 64, "x")


def test_a_swapped_ref_is_refused_on_read_and_by_fsck(tmp_path):
    store = Store(tmp_path / "store")
    good, failed = _record("a" * 64), _record("b" * 64, verdict="failed")
    store.set_ref("builds", good.id, store.put_json(encode(good)))
    store.set_ref("builds", failed.id, store.put_json(encode(failed)))
    assert store.fsck() == []
    # An attacker (or a bug) points the failed derivation's ref at the other derivation's good record.
    store.set_ref("builds", failed.id, store.get_ref("builds", good.id) or "")
    with pytest.raises(RecordError, match="the ref names b+ but the record is for a+"):
        load_record(store, failed.id)
    problems = [str(p) for p in store.fsck()]
    assert len(problems) == 1 and f"refs/builds/{failed.id}" in problems[0] and "bad record" in problems[0]


def test_fsck_reports_a_malformed_record(tmp_path):
    store = Store(tmp_path / "store")
    doc = encode(_record("a" * 64))
    doc["verdict"] = 7
    store.set_ref("builds", "a" * 64, store.put_json(doc))
    (problem,) = store.fsck()
    assert "verdict: expected str, found int" in str(problem)
