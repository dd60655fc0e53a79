"""What builders/run_tests.py reads from a suite's output: the ids of the tests that failed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

RUNNER = Path(__file__).resolve().parent.parent / "builders" / "run_tests.py"


def runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wheelproof_run_tests", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pytest_short_summary_ids():
    out = ("PASSED tests/test_a.py::T::test_z\n=========== short test summary info ===========\n"
           "FAILED tests/test_a.py::T::test_x - AssertionError: no\n"
           "ERROR tests/test_b.py::test_y\n=========== 1 failed, 1 passed, 1 error in 0.1s ===========\n")
    assert runner().failed_ids(out, pytest=True) == ["tests/test_a.py::T::test_x", "tests/test_b.py::test_y"]


def test_forced_colour_does_not_hide_the_ids():
    """A project's config may force colour (python-slugify's does): the summary is then wrapped in SGR codes."""
    out = ("\x1b[36m\x1b[1m=========== short test summary info ===========\x1b[0m\n"
           "\x1b[31mFAILED\x1b[0m tests/test_release.py::\x1b[1mReleaseRegressionTests::test_legacy\x1b[0m - "
           "ModuleNotFoundError: No module named 'tools'\n"
           "\x1b[31m======== \x1b[31m\x1b[1m1 failed\x1b[0m, \x1b[32m139 passed\x1b[0m ========\x1b[0m\n")
    assert runner().failed_ids(out, pytest=True) == ["tests/test_release.py::ReleaseRegressionTests::test_legacy"]


def test_unittest_headings():
    out = "FAIL: test_bad (test_tiny.T.test_bad)\n----\nERROR: test_io (pkg.tests.test_io.U.test_io)\n"
    assert runner().failed_ids(out, pytest=False) == ["pkg.tests.test_io.U.test_io", "test_tiny.T.test_bad"]


def test_only_the_outer_summary_counts():
    """pytest-xdist's own suite runs pytest inside its tests: their summaries come first, in failure reports."""
    out = ("____ test_locking ____\n----- Captured stdout call -----\n"
           "=========================== short test summary info ============================\n"
           "ERROR test_a.py - ImportError while importing test module\n"
           "FAILED test_b.py::test_inner - assert 0\n"
           "=========================== short test summary info ============================\n"
           "FAILED testing/acceptance_test.py::TestLocking::test_single_file[each] - AssertionError\n"
           "======= 1 failed, 156 passed in 142.37s =======\n")
    assert runner().failed_ids(out, pytest=True) == ["testing/acceptance_test.py::TestLocking::test_single_file[each]"]
