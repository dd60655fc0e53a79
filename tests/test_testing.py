"""`doit test:NAME`: a package's own suite against its published wheel, in the sandbox."""

from __future__ import annotations

import pytest

from pipeline.model.declaration import load_all
from pipeline.model.errors import WheelproofError
from pipeline.realise import testing
from pipeline.realise.rebuild import load_record

from .conftest import needs_bwrap

pytestmark = [pytest.mark.integration, needs_bwrap]

UNITTEST = 'command = ["python", "-m", "unittest", "discover", "-v", "-s", "tests"]\n'


def suite(world, body: str, test_table: str = "", name: str = "tiny"):
    files = {"tests/__init__.py": "", "tests/test_tiny.py": "import unittest\nimport tiny\n\n" + body}
    world.declare_tiny(name, sdist_files=files, test_table="\n[test]\n" + UNITTEST + test_table)
    decls = load_all(world.declarations)
    p = testing.plan(decls[name], decls)
    return testing.run(p, world.store, log=lambda m: None), p


PASSING = """
class T(unittest.TestCase):
    def test_value(self):
        self.assertEqual(tiny.X, 1)

    def test_from_the_wheel(self):
        self.assertIn("/env/", tiny.__file__)

    @unittest.skip("not today")
    def test_skipped(self):
        pass
"""


def test_passing_suite_runs_against_the_installed_wheel(world):
    record, p = suite(world, PASSING)
    assert record.outcome == "passed", record
    assert (record.tests, record.passed, record.skipped, record.failed) == (3, 2, 1, 0)
    assert record.imports["tiny"].startswith("/env/lib/")  # the wheel, not the source tree
    assert testing.load_result(world.store, p) == record
    assert "tests passed: 2 passed" in testing.summary_line(record)


def test_a_namespace_package_is_proved_to_come_from_the_wheel(world):
    """PEP 420: a namespace package has no origin; the runner proves its search path is in /env."""
    files = {"tests/__init__.py": "",
             "tests/test_tiny.py": "import unittest\nimport tinyns.inner\n\n"
                                   "class T(unittest.TestCase):\n    def test_value(self):\n"
                                   "        self.assertEqual(tinyns.inner.X, 1)\n"}
    world.declare_tiny("tiny", files={"tinyns/inner/__init__.py": "X = 1\n"}, sdist_files=files,
                       test_table="\n[test]\n" + UNITTEST)
    decls = load_all(world.declarations)
    record = testing.run(testing.plan(decls["tiny"], decls), world.store, log=lambda m: None)
    assert record.outcome == "passed", record
    assert record.imports["tinyns"].startswith("/env/lib/")


def test_failing_suite_blocks(world):
    body = "class T(unittest.TestCase):\n    def test_bad(self):\n        self.assertEqual(tiny.X, 2)\n"
    record, _ = suite(world, body)
    assert record.outcome == "failed" and record.failed == 1


def test_known_failure_is_allowed_with_its_reason(world):
    body = "class T(unittest.TestCase):\n    def test_bad(self):\n        self.fail('upstream bug')\n"
    record, _ = suite(world, body, 'known-failure = { reason = "upstream bug #123", '
                                   'tests = ["test_tiny.T.test_bad"] }\n')
    assert record.outcome == "known-failure" and record.known_failure == "upstream bug #123"
    assert "known: upstream bug #123" in testing.summary_line(record)


def test_network_access_fails_inside_the_sandbox(world):
    body = ("import socket\nclass T(unittest.TestCase):\n    def test_net(self):\n"
            "        socket.create_connection(('151.101.0.223', 443), timeout=5)\n")
    record, _ = suite(world, body)
    assert record.outcome == "failed" and record.errors == 1
    assert record.violation == "network"


def test_hanging_suite_times_out(world):
    body = "import time\nclass T(unittest.TestCase):\n    def test_hang(self):\n        time.sleep(120)\n"
    record, _ = suite(world, body, "timeout = 3\n")
    assert record.outcome == "timeout" and record.duration < 60


def test_doit_test_task_and_up_to_date(world):
    files = {"tests/__init__.py": "", "tests/test_tiny.py": "import unittest\nimport tiny\n\n" + PASSING}
    world.declare_tiny("tiny", sdist_files=files, test_table="\n[test]\n" + UNITTEST)
    first = world.doit("test:tiny")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "tests passed: 2 passed, 0 failed, 0 errors, 1 skipped of 3" in first.stdout
    second = world.doit("test:tiny")
    assert "-- test:tiny" in second.stdout
    record = load_record(world.store, next(n for _, n, _ in world.store.list_refs("builds")))
    assert record is not None and record.tests is not None and record.tests.outcome == "passed"


def test_declared_test_source_when_the_sdist_has_none(world):
    import io
    import tarfile

    from pipeline.store.local import sha256_file

    archive = world.dist / "tiny-tests-1.0.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tf:
        for name, text in {"tiny-tests/tests/__init__.py": "",
                           "tiny-tests/tests/test_x.py": "import unittest\nimport tiny\n\n" + PASSING}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    sha, size = sha256_file(archive)
    table = f'source = {{ url = "{world.url_of(archive)}", sha256 = "{sha}", size = {size} }}\n'
    world.declare_tiny("tiny", test_table="\n[test]\n" + UNITTEST + table)  # the sdist itself has no tests
    decls = load_all(world.declarations)
    p = testing.plan(decls["tiny"], decls)
    assert p.source.filename == "tiny-tests-1.0.tar.gz" and p.source.sha256 == sha
    record = testing.run(p, world.store, log=lambda m: None)
    assert record.outcome == "passed" and (record.passed, record.skipped) == (2, 1), record



def test_a_suite_whose_project_excludes_the_test_python_is_refused_at_planning(world):
    """The env maker installs wheels without pip's Requires-Python check: a project that excludes the suite's
    interpreter would install and then fail on import (deprecated 3.0.1, >=3.12, on cp311)."""
    world.declare_tiny("tiny", sdist_files={"tests/__init__.py": "", "tests/test_tiny.py": "import tiny\n"},
                       test_table="\n[test]\n" + UNITTEST)
    path = world.declarations / "ti" / "tiny.toml"
    path.write_text(path.read_text().replace('requires-python = ">=3.8"', 'requires-python = ">=3.99"'))
    decls = load_all(world.declarations)
    with pytest.raises(WheelproofError, match=r"tiny\.toml: requires-python '>=3\.99': tiny cannot be installed "
                                              r"on cp311-manylinux-x86_64 \(Python 3\.11\), where suites run"):
        testing.plan(decls["tiny"], decls)
