"""``doit test:NAME``: run a package's own tests against the wheel we publish, in the build sandbox.

The environment holds only the published wheel, its runtime closure and the test requirements,
taken from the set's own wheels (for this build platform) plus any ``[[test.inputs]]`` pinned wheels;
the tests come from the sdist (or a declared ``[test] source``). A test derivation id covers all of
that plus the ``[test]`` table and the runner program; the task is up to date while a result for it
is in the store. Results go into a test record (``refs/tests/<id>``) and into the build record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline.model import environments
from pipeline.model.declaration import Artifact, Declaration
from pipeline.model.derivation import builder_digest, canonical_json
from pipeline.model.environments import Environment
from pipeline.model.errors import WheelproofError
from pipeline.model.records import TEST_KIND, LogRef, TestRecord, encode
from pipeline.model.target import build_target, target_file
from pipeline.realise.fetch import fetch
from pipeline.realise.rebuild import (
    RECORD_KIND,
    Workspace,
    derivation,
    error_line,
    extract_limits,
    load_record,
    sandbox_environment,
)
from pipeline.realise.sandbox import classify_violation, staging_dir
from pipeline.store.local import Store

DEFAULT_COMMAND = ("python", "-m", "pytest")


class ClosureError(WheelproofError):
    pass


def runtime_closure(decl: Declaration, decls: Mapping[str, Declaration],
                    extra: tuple[str, ...] = ()) -> list[Declaration]:
    """The declarations needed to import ``decl`` (and ``extra`` requirements) on the build target."""
    env = target_markers()
    out: dict[str, Declaration] = {}
    queue: list[tuple[Declaration, str]] = [(decl, "")]
    queue += [(_find(r, decls, decl), e) for r in extra for e in [""] + sorted(Requirement(r).extras)]
    seen: set[tuple[str, str]] = set()
    while queue:
        d, ex = queue.pop()
        if (d.canonical_name, ex) in seen:
            continue
        seen.add((d.canonical_name, ex))
        out[d.canonical_name] = d
        for text in d.dependencies:
            r = Requirement(text)
            if r.marker is not None and not r.marker.evaluate({**env, "extra": ex}):
                continue
            if r.marker is None and ex:
                continue
            target = _find(text, decls, d)
            queue += [(target, "")] + [(target, canonicalize_name(e)) for e in r.extras]
    return sorted(out.values(), key=lambda d: d.canonical_name)


def target_environment() -> Environment:
    """The supported environment the declared build target is (suites run there, not on this interpreter)."""
    target = build_target()
    for env in environments.load(target_file()):
        if env.name == target.name:
            return env
    raise WheelproofError(f"{target_file()}: [build] target {target.name} is not a supported environment")


def target_markers() -> dict[str, str]:
    """The PEP 508 marker environment of the declared build target (not of this interpreter)."""
    return dict(target_environment().markers)


def _find(requirement: str, decls: Mapping[str, Declaration], by: Declaration) -> Declaration:
    name = canonicalize_name(Requirement(requirement).name)
    if name not in decls:
        raise ClosureError(f"{by.path}: {requirement!r} is not in the set (run `doit check`)")
    return decls[name]


def _published(decl: Declaration) -> Artifact:
    return decl.wheel_for_build()


@dataclass(frozen=True)
class TestPlan:
    __test__ = False

    decl: Declaration
    wheels: tuple[Artifact, ...]      # published wheel first
    source: Artifact

    def description(self) -> dict[str, Any]:
        t = self.decl.test
        assert t is not None
        return {
            "schema": 1, "name": self.decl.canonical_name, "version": self.decl.version,
            "wheels": [{"filename": w.filename, "sha256": w.sha256} for w in self.wheels],
            "source": {"filename": self.source.filename, "sha256": self.source.sha256},
            "command": list(t.command or DEFAULT_COMMAND), "deselect": [d.target for d in t.deselect],
            "ignore": [i.target for i in t.ignore], "known_failure": t.known_failure, "timeout": t.timeout,
            "known_failing": list(t.known_failing), "environment": {e.name: e.value for e in t.environment},
            "runner": builder_digest(), "target": build_target().to_json(),
            "sandbox": derivation(self.decl).sandbox,
        }

    @property
    def id(self) -> str:
        return hashlib.sha256(canonical_json(self.description())).hexdigest()


def plan(decl: Declaration, decls: Mapping[str, Declaration]) -> TestPlan:
    if decl.test is None:
        raise WheelproofError(f"{decl.path}: no [test] table")
    closure = runtime_closure(decl, decls, decl.test.requires)
    env = target_environment()
    for d in closure:  # pip would refuse these; our env maker would install them and the import fail later
        if not environments.admits(d.requires_python, env):
            needed = "" if d is decl else f", which the [test] of {decl.name} needs,"
            raise WheelproofError(f"{d.path}: requires-python {d.requires_python!r}: {d.name}{needed} cannot be "
                                  f"installed on {env.name} (Python {env.python}), where suites run")
    wheels = [_published(decl)] + [_published(d) for d in closure if d is not decl] + list(decl.test.inputs)
    return TestPlan(decl, tuple(wheels), decl.test.source or decl.sdist)


def load_result(store: Store, p: TestPlan) -> TestRecord | None:
    return load_result_by_id(store, p.id)


def load_result_by_id(store: Store, test_id: str) -> TestRecord | None:
    """The test record of a plan, checked field by field and against the ref's name."""
    return store.read_record(TestRecord, TEST_KIND, test_id)


def judge_failures(expected: tuple[str, ...], failed: list[str]) -> tuple[str, str | None]:
    """The outcome of a run whose suite failed: ``known-failure`` only if exactly the expected ids failed."""
    if not expected:
        return "failed", None
    unexpected = sorted(set(failed) - set(expected))
    passing = sorted(set(expected) - set(failed))
    if not unexpected and not passing:
        return "known-failure", None
    parts = []
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected failure(s): {', '.join(unexpected[:5])}")
    if passing:
        parts.append(f"{len(passing)} expected failure(s) now pass (update known-failure.tests): "
                     f"{', '.join(passing[:5])}")
    return "failed", "; ".join(parts)


def run(p: TestPlan, store: Store, log: Callable[[str], None] = print) -> TestRecord:
    decl, spec = p.decl, p.decl.test
    assert spec is not None
    started = time.monotonic()
    for a in (p.source, *p.wheels):
        fetch(store, a, what=f"{decl.path} (test inputs)", log=log)
    with store.shared(), tempfile.TemporaryDirectory(dir=staging_dir(), prefix="wheelproof-") as tmp:
        environment = sandbox_environment(decl) | {e.name: e.value for e in spec.environment}
        ws = Workspace(Path(tmp), "run_tests.py", ("env", "extract"), environment, spec.timeout,
                       "test.log", decl.build.limits)
        ws.stage(store, "source", [p.source])
        ws.stage(store, "wheels", p.wheels)
        status, prepared = ws.prepare(*extract_limits(decl.build.limits))
        result: dict[str, Any] = {}
        if status == 0:
            run_spec = json.dumps({"command": list(spec.command), "deselect": [d.target for d in spec.deselect],
                                   "ignore": [i.target for i in spec.ignore]})
            status, result = ws.run("run", prepared["top"], "/build", "--wheel", p.wheels[0].filename,
                                    "--spec", run_spec)
        text = ws.log()
    counts = result.get("counts", {})
    mismatch = None
    if status == 124:
        verdict = "timeout"
    elif status != 0 or "exit_status" not in result:
        verdict = "error"
    elif result["exit_status"] == 5 and not counts.get("tests"):
        verdict = "error"  # pytest collected nothing: the source holds no tests
    elif result["exit_status"] == 0:
        verdict, mismatch = judge_failures(spec.known_failing, []) if spec.known_failing else ("passed", None)
    else:
        verdict, mismatch = judge_failures(spec.known_failing, list(result.get("failed_ids", [])))
    tests = int(counts.get("tests", 0))
    failed, errors, skipped = (int(counts.get(k, 0)) for k in ("failures", "errors", "skipped"))
    log_digest = store.put_compressed(text.encode())
    record = TestRecord(
        test_id=p.id, plan=p.description(), derivation_id=derivation(decl).id, name=decl.canonical_name,
        version=decl.version, outcome=verdict, known_failure=spec.known_failure,
        tests=tests, passed=tests - failed - errors - skipped, failed=failed, errors=errors,
        skipped=skipped, duration=round(time.monotonic() - started, 3),
        imports=result.get("imports"), violation=classify_violation(text) if verdict != "passed" else None,
        failed_ids=tuple(str(i) for i in result.get("failed_ids", []))[:200],
        error=("no tests were collected (declare a [test] source that has them)"
               if result.get("exit_status") == 5 and not tests else mismatch if mismatch else
               error_line(text) if verdict in ("error", "failed", "known-failure") else None),
        log=LogRef(log_digest), references=(log_digest,),
    )
    with store.shared():
        store.set_ref(TEST_KIND, p.id, store.put_json(encode(record)))
        attach_to_build_record(store, decl, record)
    return record


def attach_to_build_record(store: Store, decl: Declaration, test_record: TestRecord) -> None:
    drv = derivation(decl).id
    build_record = load_record(store, drv)
    if build_record is None:
        return
    updated = dataclasses.replace(build_record, tests=test_record.summary(),
                                  references=tuple(sorted(set(build_record.references) | {test_record.log.sha256})))
    store.set_ref(RECORD_KIND, drv, store.put_json(encode(updated)))


def summary_line(r: TestRecord) -> str:
    line = (f"{r.name} {r.version}: tests {r.outcome}: {r.passed} passed, {r.failed} failed, "
            f"{r.errors} errors, {r.skipped} skipped of {r.tests} [{r.duration:.1f}s]")
    if r.violation:
        line += f"; sandbox violation: {r.violation}"
    if r.outcome == "known-failure":
        line += f"; known: {r.known_failure}"
    elif r.error and r.outcome != "passed":
        line += f"; {r.error}"
    return line
