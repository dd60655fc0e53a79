"""Typed records: what a build, a test run and a snapshot leave in the store.

A record is a zstd JSON document in the store, named by a ref (``refs/<kind>/<id>``). On disk it is
plain JSON with a ``schema`` and a ``kind``; in memory it is a frozen dataclass, and every read goes
through :func:`decode`, which checks the schema, the kind and the type of every field, so a record
written by other code (or by an attacker with write access to the store) cannot reach the pipeline
half-formed. A record also names the id it was made for (``derivation_id``, ``test_id``); a ref
whose name differs from that id is refused (:func:`check_ref`), so a swapped ref cannot make one
derivation's verdict stand for another's.

Nested documents that other modules own and only pass through (the derivation description, the
builder's result, the comparison) are kept as JSON objects (:data:`JSONObject`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, TypeVar

from pipeline.model.errors import IntegrityError
from pipeline.model.target import HostFacts

__all__ = [
    "BUILD_KIND", "TEST_KIND", "SNAPSHOT_KIND", "VERDICTS", "OUTCOMES", "JSONObject",
    "RecordError", "ArtifactRef", "AttestationRef", "CarRef", "OutputWheel", "LogRef", "TestSummary", "BuildRecord",
    "TestRecord",
    "SnapshotRecord", "decode", "encode", "check_ref",
]

BUILD_KIND = "builds"
TEST_KIND = "tests"
SNAPSHOT_KIND = "snapshots"
VERDICTS = ("identical", "equivalent", "differs", "failed", "not-rebuilt")
# not-rebuilt: the declaration says `rebuild = false` (with a reason); nothing was built, so no output
OUTCOMES = ("passed", "failed", "known-failure", "error", "timeout")

JSONObject = Mapping[str, Any]


class RecordError(IntegrityError):
    """A stored record is malformed, of another kind, or not the one its ref names."""


@dataclass(frozen=True)
class ArtifactRef:
    filename: str
    sha256: str


@dataclass(frozen=True)
class OutputWheel:
    filename: str
    sha256: str
    size: int


@dataclass(frozen=True)
class AttestationRef:
    """The signed DSSE envelope of a build (docs/challenge.md): its store object and signer."""

    sha256: str   # the envelope's bytes in the store
    key_id: str   # the builder key that signed it (sha256 of its SubjectPublicKeyInfo)


@dataclass(frozen=True)
class LogRef:
    sha256: str
    encoding: str = "zstd"


@dataclass(frozen=True)
class TestSummary:
    """What a build record repeats of its latest test run."""

    __test__: ClassVar[bool] = False
    test_id: str
    outcome: str
    tests: int
    passed: int
    failed: int
    errors: int
    skipped: int
    duration: float


@dataclass(frozen=True)
class BuildRecord:
    """One realisation of a derivation (``refs/builds/<derivation id>``)."""

    KIND: ClassVar[str] = "build-record"
    SCHEMA: ClassVar[int] = 1
    derivation_id: str
    derivation: JSONObject
    declaration: str
    name: str
    version: str
    started: str
    sandbox: str
    inputs: Mapping[str, str]
    upstream: ArtifactRef
    verdict: str
    builder_result: JSONObject
    log: LogRef
    timings: Mapping[str, float]
    references: tuple[str, ...]
    output: OutputWheel | None = None
    comparison: JSONObject | None = None
    summary: str | None = None
    determinism: JSONObject | None = None
    violation: str | None = None
    log_tail: str | None = None
    error: str | None = None
    exit_status: int | None = None
    tests: TestSummary | None = None
    host: HostFacts | None = None              # recorded, not hashed: what may differ between builders
    finished: str | None = None
    attestation: AttestationRef | None = None  # the builder's signed statement of this record

    @property
    def id(self) -> str:
        return self.derivation_id

    @property
    def succeeded(self) -> bool:
        return self.verdict != "failed"

    def _validate(self, where: str) -> None:
        if self.verdict not in VERDICTS:
            raise RecordError(f"{where}: verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}")
        if self.succeeded and self.verdict != "not-rebuilt" and self.output is None:
            raise RecordError(f"{where}: a {self.verdict} record has no output wheel")


@dataclass(frozen=True)
class TestRecord:
    """One run of a package's test suite (``refs/tests/<test id>``)."""

    __test__: ClassVar[bool] = False
    KIND: ClassVar[str] = "test-record"
    SCHEMA: ClassVar[int] = 1
    test_id: str
    plan: JSONObject
    derivation_id: str
    name: str
    version: str
    outcome: str
    known_failure: str | None
    tests: int
    passed: int
    failed: int
    errors: int
    skipped: int
    duration: float
    log: LogRef
    references: tuple[str, ...]
    imports: JSONObject | None = None
    violation: str | None = None
    error: str | None = None
    failed_ids: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.test_id

    @property
    def succeeded(self) -> bool:
        """Counts as done: passed, or failed exactly as the declaration says it is known to."""
        return self.outcome in ("passed", "known-failure")

    def summary(self) -> TestSummary:
        return TestSummary(self.test_id, self.outcome, self.tests, self.passed, self.failed, self.errors,
                           self.skipped, self.duration)

    def _validate(self, where: str) -> None:
        if self.outcome not in OUTCOMES:
            raise RecordError(f"{where}: outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")


@dataclass(frozen=True)
class CarRef:
    """A snapshot's CARv1: its size and its plan (``index``: the store document listing every section's
    CID and length, pipeline/export/carcopy.py). The bytes are made on demand (``python -m pipeline
    car``), so ``sha256`` is None in records written since; older records carry the SHA-256 of the CAR
    every snapshot then wrote, and no plan."""

    size: int
    index: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class SnapshotRecord:
    """A published snapshot (``refs/snapshots/<root CID>`` and the ``latest`` tag)."""

    KIND: ClassVar[str] = "snapshot"
    SCHEMA: ClassVar[int] = 1
    root: str
    car: CarRef
    references: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return self.root

    def _validate(self, where: str) -> None:
        for name in ("index", "sha256"):
            value = getattr(self.car, name)
            if value is not None and not (len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
                raise RecordError(f"{where}: car: {name}: not a SHA-256 digest: {value!r}")
        if self.car.index is None and self.car.sha256 is None:
            raise RecordError(f"{where}: car: neither a plan (index) nor a SHA-256")
        if self.car.size < 0:
            raise RecordError(f"{where}: car: size: negative ({self.car.size})")


Record = BuildRecord | TestRecord | SnapshotRecord
R = TypeVar("R", bound=Record)


def encode(record: Record) -> dict[str, Any]:
    """The record as a JSON document (``None`` fields left out, as older writers did)."""
    doc = _to_json(record)
    doc.update(schema=record.SCHEMA, kind=record.KIND)
    return doc


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None}
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def decode(cls: type[R], doc: Any, where: str) -> R:
    """Check ``doc`` against ``cls`` field by field; :class:`RecordError` names the first bad field."""
    if not isinstance(doc, dict):
        raise RecordError(f"{where}: not a JSON object")
    # The snapshot manifest predates the schema key; builds and tests always carried it.
    if doc.get("schema", cls.SCHEMA) != cls.SCHEMA or doc.get("kind") != cls.KIND:
        raise RecordError(f"{where}: expected a {cls.KIND} (schema {cls.SCHEMA}), "
                          f"found {doc.get('kind')!r} (schema {doc.get('schema')!r})")
    body = {k: v for k, v in doc.items() if k not in ("schema", "kind")}
    record = _from_json(cls, body, where)
    record._validate(where)
    return record


def check_ref(record: R, name: str, where: str) -> R:
    """Refuse a record reached through a ref named for another id."""
    if record.id != name:
        raise RecordError(f"{where}: the ref names {name} but the record is for {record.id}")
    return record


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_json(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _from_json(inner, value, where)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected an object")
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise RecordError(f"{where}: unknown field {unknown[0]!r}")
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            if name not in value:
                optional = type(None) in typing.get_args(_hints(tp)[name])  # encode() leaves None out
                if not optional and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise RecordError(f"{where}: missing field {name!r}")
                if optional and f.default is dataclasses.MISSING:
                    kwargs[name] = None
                continue
            kwargs[name] = _from_json(_hints(tp)[name], value[name], f"{where}: {name}")
        return tp(**kwargs)
    if origin is tuple:
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list")
        return tuple(_from_json(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is Mapping or tp is JSONObject:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise RecordError(f"{where}: expected an object")
        if args and args[1] is not Any:
            return {k: _from_json(args[1], v, f"{where}.{k}") for k, v in value.items()}
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(f"{where}: expected a number")
        return float(value)
    if tp in (str, int, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise RecordError(f"{where}: expected {tp.__name__}, found {type(value).__name__}")
        return value
    raise TypeError(f"no JSON form for {tp!r}")  # a programming error, not bad data
