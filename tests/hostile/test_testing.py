"""Test results cannot be gamed: a failed suite never counts as done, and known failures are exact."""

from __future__ import annotations

import pytest

from pipeline.model.declaration import load_all
from pipeline.model.errors import DeclarationError
from pipeline.model.records import LogRef, TestRecord, decode, encode
from pipeline.realise import testing
from pipeline.store.local import Store
from pipeline.store.refindex import RefIndex
from tests.conftest import needs_bwrap

UNITTEST = 'command = ["python", "-m", "unittest", "discover", "-v", "-s", "tests"]\n'
FAILING = ("import unittest\nimport tiny\n\nclass T(unittest.TestCase):\n"
           "    def test_bad(self):\n        self.assertEqual(tiny.X, 2)\n"
           "    def test_good(self):\n        self.assertEqual(tiny.X, 1)\n")


def declare(world, body: str, table: str = ""):
    files = {"tests/__init__.py": "", "tests/test_tiny.py": body}
    world.declare_tiny("tiny", sdist_files=files, test_table="\n[test]\n" + UNITTEST + table)


@pytest.mark.parametrize("outcome,up_to_date", [("passed", True), ("known-failure", True), ("failed", False),
                                                ("error", False), ("timeout", False)])
def test_only_accepted_results_are_up_to_date(outcome, up_to_date, tmp_path):
    record = TestRecord(test_id="t" * 64, plan={}, derivation_id="d" * 64, name="tiny", version="1.0",
                        outcome=outcome, known_failure=None, tests=1, passed=0, failed=1, errors=0, skipped=0,
                        duration=1.0, log=LogRef("3" * 64), references=())
    assert record.succeeded is up_to_date
    # The up-to-date index doit asks agrees, read back from a store.
    store = Store(tmp_path / "store")
    store.set_ref("tests", record.test_id, store.put_json(encode(record)))
    index = RefIndex(store, "tests", lambda name, digest: decode(TestRecord, store.read_json(digest), name).succeeded)
    assert index.done(record.test_id) is up_to_date
    assert index.done("0" * 64) is False


def test_known_failures_must_match_exactly():
    assert testing.judge_failures(("a",), ["a"]) == ("known-failure", None)
    assert testing.judge_failures((), ["a"]) == ("failed", None)
    verdict, why = testing.judge_failures(("a",), ["a", "b"])
    assert verdict == "failed" and why == "1 unexpected failure(s): b"
    verdict, why = testing.judge_failures(("a", "c"), ["a"])
    assert verdict == "failed" and why == "1 expected failure(s) now pass (update known-failure.tests): c"


def test_a_known_failure_without_test_ids_is_a_declaration_error(world):
    with pytest.raises(DeclarationError, match=r"tiny\.toml:\d+: test\.known-failure: .*name the test ids"):
        declare(world, FAILING, 'known-failure = "flaky upstream"\n')


@pytest.mark.integration
@needs_bwrap
def test_a_failed_suite_is_rerun_and_keeps_blocking(world):
    declare(world, FAILING)
    first = world.doit("test:tiny")
    assert first.returncode != 0 and "tests failed: 1 passed, 1 failed" in first.stdout
    second = world.doit("test:tiny")  # not up to date: it runs (and fails) again
    assert second.returncode != 0 and "-- test:tiny" not in second.stdout
    assert "tests failed: 1 passed, 1 failed" in second.stdout


@pytest.mark.integration
@needs_bwrap
def test_other_failures_and_passing_expected_failures_fail_the_run(world):
    declare(world, FAILING, 'known-failure = { reason = "upstream bug", tests = ["test_tiny.T.test_good"] }\n')
    decls = load_all(world.declarations)
    record = testing.run(testing.plan(decls["tiny"], decls), world.store, log=lambda m: None)
    assert record.outcome == "failed"
    assert record.error == ("1 unexpected failure(s): test_tiny.T.test_bad; 1 expected failure(s) now "
                               "pass (update known-failure.tests): test_tiny.T.test_good")
    assert record.failed_ids == ("test_tiny.T.test_bad",)
    assert not record.succeeded


@pytest.mark.integration
@needs_bwrap
def test_a_namespace_portion_outside_the_wheel_is_refused(world):
    """PEP 420 merges every portion on the path: one from the source tree (here via a declared PYTHONPATH)
    would test the sdist's code, not the wheel's, so the run stops before the suite."""
    files = {"tests/__init__.py": "", "tinyns/shadow/__init__.py": "X = 2\n",
             "tests/test_tiny.py": "import unittest\nimport tinyns.inner\n\n"
                                   "class T(unittest.TestCase):\n    def test_value(self):\n"
                                   "        self.assertEqual(tinyns.inner.X, 1)\n"}
    table = 'PYTHONPATH = { value = ".", reason = "puts the source tree on the path" }\n'
    world.declare_tiny("tiny", files={"tinyns/inner/__init__.py": "X = 1\n"}, sdist_files=files,
                       test_table="\n[test]\n" + UNITTEST + "\n[test.environment]\n" + table)
    decls = load_all(world.declarations)
    record = testing.run(testing.plan(decls["tiny"], decls), world.store, log=lambda m: None)
    assert record.outcome == "error" and not record.succeeded, (record.imports, record.error)
    assert record.imports["tinyns"].startswith("/build/") and "/tinyns" in record.imports["tinyns"]
    assert "would not come from the installed wheel" in (record.error or "")
