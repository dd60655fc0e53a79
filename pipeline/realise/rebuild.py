"""Realise a derivation: fetch its pinned inputs, rebuild the wheel in the
sandbox, compare it with the upstream wheel, and write a build record.

The record (zstd JSON in the store, root ``refs/builds/<derivation id>``)
holds the derivation, input and output hashes, timings, the verdict and the
log. When the rebuild is not identical, a second build in a varied
environment (other build path, umask and hash seed) says whether our own build
is deterministic.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.model.conditions import tz_string
from pipeline.model.declaration import Artifact, Declaration
from pipeline.model.derivation import BUILDERS_DIR, Derivation, SandboxSpec, canonical_json, toolchain
from pipeline.model.errors import WheelproofError
from pipeline.model.limits import DEFAULT_LIMITS, Limits
from pipeline.model.records import (
    BUILD_KIND,
    ArtifactRef,
    AttestationRef,
    BuildRecord,
    LogRef,
    OutputWheel,
    encode,
)
from pipeline.model.target import build_target, host_facts, target_file
from pipeline.realise.boundary import REJECTED_STATUS, BoundaryError, builder_result, check_source_tree, take_wheel
from pipeline.realise.fetch import fetch
from pipeline.realise.sandbox import (
    Bind,
    base_python,
    classify_violation,
    open_sandbox,
    sandbox_specification,
    staging_dir,
    unsandboxed_requested,
)
from pipeline.store.local import Store
from pipeline.wheel.compare import compare_wheels
from pipeline.wheel.zipcheck import ZipCaps

RECORD_KIND = BUILD_KIND
LOG_TAIL_LINES = 40
BUILD_TIMEOUT = float(os.environ.get("WHEELPROOF_BUILD_TIMEOUT", "1800"))


class BuildFailed(WheelproofError):
    """The build ran and failed; its record is in the store."""


@dataclass(frozen=True)
class Variation:
    """What differs between the first build and the check for determinism."""

    name: str
    build_root: str
    umask: str
    hash_seed: str


PRIMARY = Variation("primary", "/build", "022", "0")
VARIED = Variation("varied", "/var/tmp/wheelproof-varied/a/much/longer/build/path", "002", "1234567")


# The fixed part of every build's environment (hashed into the sandbox specification).
BASE_ENVIRONMENT = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONNOUSERSITE": "1",
    "PIP_NO_INDEX": "1",
}


def extract_limits(limits: Limits) -> tuple[str, ...]:
    """The builders' options that bound unpacking the sdist (checked inside, before extracting)."""
    return ("--max-extract", str(limits.extracted), "--max-ratio", str(limits.ratio))


def sandbox_mode() -> str:
    return "none (explicit opt-out)" if unsandboxed_requested() else "bubblewrap"


@cache
def _sandbox_spec(unsandboxed: bool) -> SandboxSpec:
    mode = sandbox_mode()
    spec = {"sandbox": sandbox_specification(unsandboxed), "environment": BASE_ENVIRONMENT,
            "build": PRIMARY.__dict__, "phases": ["prepare", "wheel"]}
    return SandboxSpec(mode, hashlib.sha256(canonical_json(spec)).hexdigest())


def sandbox_spec() -> SandboxSpec:
    """What every build of this pipeline runs in (mode and the digest of its specification)."""
    return _sandbox_spec(unsandboxed_requested())


def derivation(decl: Declaration) -> Derivation:
    return Derivation(decl, sandbox_spec(), build_target())


def load_record(store: Store, drv_id: str) -> BuildRecord | None:
    """The build record of derivation ``drv_id``, checked field by field and against the ref's name."""
    return store.read_record(BuildRecord, RECORD_KIND, drv_id)


def is_built(store: Store, decl: Declaration) -> bool:
    """doit's up-to-date check: a non-failed record exists for this derivation."""
    record = load_record(store, derivation(decl).id)
    return record is not None and record.succeeded


def link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def stage_builder(inputs: Path) -> None:
    """Copy the builder programs into a sandbox's read-only inputs (at /inputs/builder)."""
    shutil.copytree(BUILDERS_DIR, inputs / "builder", ignore=shutil.ignore_patterns("__pycache__"))


def fetch_inputs(store: Store, decl: Declaration, log: Callable[[str], None]) -> dict[str, str]:
    what = f"{decl.path}"
    upstream = decl.wheel_for_build()
    wanted: list[tuple[str, Artifact]] = [("sdist", decl.sdist), ("wheels", upstream)]
    wanted += [(f"build.inputs[{i}]", a) for i, a in enumerate(decl.build.all_inputs)]
    wanted += [("builders/toolchain.toml", a) for a in toolchain()]
    for field, art in wanted:
        fetch(store, art, what=f"{what} ({field})", log=log)
    return {a.filename: a.sha256 for _, a in wanted}


def sandbox_environment(decl: Declaration, variation: Variation | None = None) -> dict[str, str]:
    """The build's environment: the fixed base, the declared conditions, then the declared overrides."""
    variation = variation or PRIMARY
    conditions = decl.build.conditions
    env = {**BASE_ENVIRONMENT, "PYTHONHASHSEED": variation.hash_seed}
    if not conditions.stamps_from_files:
        env["SOURCE_DATE_EPOCH"] = str(decl.build.source_date_epoch)
    if conditions.utc_offset is not None:
        env["TZ"] = tz_string(conditions.utc_offset)
    env.update({e.name: e.value for e in decl.build.environment})
    return env


FAKETIME_GLOB = "/usr/lib/*/faketime/libfaketime.so.1"


def faketime_library() -> Path:
    """Debian's libfaketime (package ``faketime``), preloaded into the backend for a frozen clock."""
    import glob

    found = sorted(glob.glob(FAKETIME_GLOB))
    if not found:
        raise WheelproofError(f"a declared [build.conditions] clock needs libfaketime ({FAKETIME_GLOB}); "
                              "install Debian's faketime package (make setup does)")
    return Path(found[0])


def condition_options(decl: Declaration, variation: Variation) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The builder's options for the declared conditions: (prepare's, the build phase's)."""
    conditions = decl.build.conditions
    umask: tuple[str, ...] = ("--umask", conditions.umask_value(variation.umask))
    prepare = umask + (("--keep-modes",) if conditions.modes == "sdist" else ())
    if conditions.checkout is not None:
        prepare += ("--checkout-time", str(conditions.checkout))
    build = umask
    if conditions.clock is not None:
        build += ("--clock", str(conditions.clock), "--faketime", str(faketime_library()))
        if conditions.written:
            build += ("--written", json.dumps(dict(conditions.written), sort_keys=True))
    if conditions.host is not None:
        build += ("--host", conditions.host)
    return prepare, build


@dataclass
class BuildRun:
    status: int
    wheel: Path | None
    result: dict[str, Any]
    log: str
    seconds: float


class Workspace:
    """The layout every program in builders/ runs in, over two sandboxed phases.

    ``/inputs`` (read-only: staged artifacts and the builder programs) and ``/out`` (writable) are
    bound in both. In ``prepare`` the work directories (``/env``, ``/extract``, ...) are writable; in
    the later phase they are read-only and only the extracted source tree is writable, at
    ``<root>/<top>``. Each phase writes ``/out/<phase>.json``.
    """

    def __init__(self, root: Path, program: str, dirs: tuple[str, ...], environment: dict[str, str],
                 timeout: float, log_name: str, limits: Limits = DEFAULT_LIMITS):
        self.root, self.limits = root, limits
        self.inputs, self.out = root / "inputs", root / "out"
        self.dirs = {d: root / d for d in dirs}
        for d in (self.out, *self.dirs.values()):
            d.mkdir(parents=True)
        stage_builder(self.inputs)
        self.program, self.environment, self.timeout = program, environment, timeout
        self.log_path = root / log_name

    def stage(self, store: Store, group: str, artifacts: Iterable[Artifact]) -> None:
        for a in artifacts:
            link_or_copy(store.verified_path(a.sha256), self.inputs / group / a.filename)

    def _run(self, binds: list[Bind], phase: str, extra: tuple[str, ...],
             srcdir: str | None = None) -> tuple[int, dict[str, Any]]:
        box = open_sandbox([Bind(self.inputs, "/inputs"), Bind(self.out, "/out", writable=True), *binds])
        argv = [str(base_python()), "-I", box.path(f"/inputs/builder/{self.program}"), phase,
                "--inputs", box.path("/inputs"), "--out", box.path("/out")]
        argv += [a for d in self.dirs for a in (f"--{d}", box.path(f"/{d}"))]
        argv += ["--srcdir", box.path(srcdir)] if srcdir else []
        argv += extra
        ran = box.run(argv, env=self.environment, limits=self.limits, timeout=self.timeout, log_path=self.log_path)
        status = REJECTED_STATUS if ran.log_error and ran.status == 0 else ran.status
        if ran.log_error:
            self.note(ran.log_error)
        if status != 0 and not os.path.lexists(self.out / f"{phase}.json"):
            return status, {}
        try:  # what the sandbox wrote is hostile until checked (pipeline/realise/boundary.py)
            return status, builder_result(self.out, f"{phase}.json", self.limits.result_size)
        except BoundaryError as e:
            self.note(f"rejected: {e}")
            return REJECTED_STATUS, {}

    def note(self, message: str) -> None:
        """The host's own line in the log (a failed write is already reported as the run's error)."""
        try:
            with open(self.log_path, "ab") as f:
                f.write(f"\nwheelproof: {message}\n".encode())
        except OSError:
            pass

    def take_wheel(self, name: object) -> Path | None:
        """The wheel the sandbox left in /out, copied out and checked; None (and a log line) if refused."""
        try:
            return take_wheel(self.out, name, self.root / "taken", self.limits.wheel_size,
                              ZipCaps(unpacked=self.limits.wheel_unpacked, ratio=self.limits.ratio))
        except BoundaryError as e:
            self.note(f"rejected: {e}")
            return None

    def prepare(self, *extra: str) -> tuple[int, dict[str, Any]]:
        return self._run([Bind(p, f"/{d}", writable=True) for d, p in self.dirs.items()], "prepare", extra)

    def run(self, phase: str, top: str, root: str, *extra: str) -> tuple[int, dict[str, Any]]:
        """Run ``phase`` with the work directories read-only and the source tree writable at root/top."""
        binds = [Bind(p, f"/{d}") for d, p in self.dirs.items()]
        try:
            check_source_tree(self.dirs["extract"], top)
        except BoundaryError as e:
            self.note(f"rejected: {e}")
            return REJECTED_STATUS, {}
        srcdir = f"{root}/{top}"
        binds.append(Bind(self.dirs["extract"] / top, srcdir, writable=True))
        return self._run(binds, phase, extra, srcdir)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def run_builder(store: Store, decl: Declaration, variation: Variation, workroot: Path,
                phase: str = "wheel", timeout: float = BUILD_TIMEOUT) -> BuildRun:
    """Prepare and run one build of ``decl`` inside the sandbox; files stay under ``workroot``."""
    started = time.monotonic()
    ws = Workspace(workroot, "build_wheel.py", ("env", "tools", "extract"), sandbox_environment(decl, variation),
                   timeout, "build.log", decl.build.limits)
    ws.stage(store, "sdist", [decl.sdist])
    ws.stage(store, "wheels", decl.build.all_inputs)
    ws.stage(store, "tools", toolchain())
    prepare_options, build_options = condition_options(decl, variation)
    status, prepared = ws.prepare(*prepare_options, *extract_limits(decl.build.limits))
    result: dict[str, Any] = {"prepare": prepared}
    wheel = None
    if status == 0:
        settings = decl.build.config_settings_json()
        extra = ("--config-settings", json.dumps(settings, sort_keys=True)) if settings else ()
        status, built = ws.run(phase, prepared["top"], variation.build_root, *build_options, *extra)
        result.update(built)
        if status == 0 and phase == "wheel":
            wheel = ws.take_wheel(built.get("wheel"))
            status = status if wheel is not None else REJECTED_STATUS
    return BuildRun(status, wheel, result, ws.log(), time.monotonic() - started)


_ERROR_LINE = re.compile(r"^\s*((\w+\.)*\w*(Error|Exception|Exit)\b.*|wheelproof: .*)$")
_FRONTEND_NOISE = ("BuildBackendException", "CalledProcessError", "wheelproof: prepared")


def error_line(log: str) -> str | None:
    """The backend's own error message: the last exception line that is not the frontend's wrapper."""
    for line in reversed(log.splitlines()):
        if _ERROR_LINE.match(line) and not any(n in line for n in _FRONTEND_NOISE):
            return line.strip()
    return None


def _tail(log: str, n: int = LOG_TAIL_LINES) -> str:
    return "".join(log.splitlines(keepends=True)[-n:])


Attest = Callable[[BuildRecord], tuple[bytes, AttestationRef]]


def build(decl: Declaration, store: Store | None = None, log: Callable[[str], None] = print,
          attest: Attest | None = None) -> BuildRecord:
    """Realise ``decl``'s derivation and return its build record (also stored).

    ``attest`` (given by the layer that holds the builder key, pipeline/trust/attestation.py) signs the
    finished record; its envelope is stored and named in the record before the ref is set, so a record
    and its attestation appear together or not at all."""
    store = store or Store()
    drv = derivation(decl)
    host = host_facts()
    if (refusal := drv.target.refusal(host)) is not None:
        raise WheelproofError(f"{target_file()}: {refusal}")
    t0 = time.monotonic()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    upstream = decl.wheel_for_build()
    # The shared lock is held from the first fetch to the ref, so gc never collects an input in between.
    with store.shared(), tempfile.TemporaryDirectory(dir=staging_dir(), prefix="wheelproof-") as tmp:
        inputs = fetch_inputs(store, decl, log)
        timings = {"fetch": round(time.monotonic() - t0, 3)}
        refs = set(inputs.values())
        if decl.no_rebuild is not None:
            return _not_rebuilt(store, decl, drv, started, inputs, upstream, refs, timings, t0)
        first = run_builder(store, decl, PRIMARY, Path(tmp) / "primary")
        timings["build"] = round(first.seconds, 3)
        logs = [f"== {PRIMARY.name} build ==\n", first.log]
        outcome: dict[str, Any]
        if first.wheel is None:
            outcome = {"verdict": "failed", "violation": classify_violation(first.log),
                       "log_tail": _tail(first.log), "error": error_line(first.log), "exit_status": first.status}
        else:
            wheel_digest = store.put_file(first.wheel)
            refs.add(wheel_digest)
            comparison = compare_wheels(store.verified_path(upstream.sha256), first.wheel)
            under = decl.build.conditions.describe()  # a verdict says which conditions it needed
            outcome = {"verdict": comparison.verdict, "comparison": comparison.to_json(),
                       "summary": comparison.summary() + (f" under: {under}" if under else ""),
                       "output": OutputWheel(first.wheel.name, wheel_digest, first.wheel.stat().st_size)}
            if comparison.verdict != "identical":
                log(f"{decl.canonical_name} {decl.version}: {comparison.verdict}; building again under "
                    f"variation ({VARIED.name}) to see whether our own build is deterministic")
                second = run_builder(store, decl, VARIED, Path(tmp) / "varied")
                timings["varied_build"] = round(second.seconds, 3)
                logs += [f"\n== {VARIED.name} build ==\n", second.log]
                determinism: dict[str, Any] = {"variation": VARIED.__dict__}
                if second.wheel is None:
                    determinism.update(deterministic=False, error=_tail(second.log, 10))
                else:
                    own = compare_wheels(first.wheel, second.wheel)
                    determinism.update(deterministic=own.verdict == "identical", verdict=own.verdict,
                                       sha256=store.put_file(second.wheel), summary=own.summary())
                    refs.add(determinism["sha256"])
                outcome["determinism"] = determinism
        log_digest = store.put_compressed("".join(logs).encode())
        refs.add(log_digest)
        record = BuildRecord(
            derivation_id=drv.id, derivation=drv.with_config_settings(drv.description()), declaration=str(decl.path),
            name=decl.canonical_name, version=decl.version, started=started, sandbox=drv.sandbox, inputs=inputs,
            upstream=ArtifactRef(upstream.filename, upstream.sha256), builder_result=first.result,
            log=LogRef(log_digest), timings=timings | {"total": round(time.monotonic() - t0, 3)},
            references=tuple(sorted(refs)), host=host,
            finished=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **outcome)
        if attest is not None:
            envelope, ref = attest(record)
            if store.put_bytes(envelope) != ref.sha256:
                raise WheelproofError("the attestation's digest does not match its bytes")
            record = replace(record, attestation=ref, references=tuple(sorted({*record.references, ref.sha256})))
        store.set_ref(RECORD_KIND, drv.id, store.put_json(encode(record)))
    return record


def _not_rebuilt(store: Store, decl: Declaration, drv: Any, started: str, inputs: dict[str, str],
                 upstream: Any, refs: set[str], timings: dict[str, float], t0: float) -> BuildRecord:
    """The record of a declaration that says ``rebuild = false``: upstream's bytes, verified, and the reason."""
    reason = decl.no_rebuild or ""
    log_digest = store.put_compressed(f"not rebuilt (rebuild = false): {reason}\n".encode())
    record = BuildRecord(
        derivation_id=drv.id, derivation=drv.with_config_settings(drv.description()), declaration=str(decl.path),
        name=decl.canonical_name, version=decl.version, started=started, sandbox=drv.sandbox, inputs=inputs,
        upstream=ArtifactRef(upstream.filename, upstream.sha256), verdict="not-rebuilt", builder_result={},
        log=LogRef(log_digest), timings=timings | {"total": round(time.monotonic() - t0, 3)},
        references=tuple(sorted(refs | {log_digest})), summary=f"not rebuilt: {reason}")
    store.set_ref(RECORD_KIND, drv.id, store.put_json(encode(record)))
    return record


def verdict_line(record: BuildRecord) -> str:
    name, version = record.name, record.version
    t = record.timings.get("total", 0)
    if not record.succeeded:
        why = f"sandbox violation: {record.violation}" if record.violation else f"exit status {record.exit_status}"
        return f"{name} {version}: failed ({why}){': ' + record.error if record.error else ''} [{t:.1f}s]"
    line = f"{name} {version}: {record.summary or record.verdict}"
    det = record.determinism
    if det is not None:
        line += "; our build is " + ("deterministic" if det.get("deterministic") else
                                     f"NOT deterministic: {det.get('summary') or 'the varied build failed'}")
    return f"{line} [{t:.1f}s, drv {record.derivation_id[:12]}]"
