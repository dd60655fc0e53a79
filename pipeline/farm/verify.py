"""Check a worker's result before the coordinator's store accepts it; then store it atomically.

A worker is outside the coordinator's trust boundary: whatever it returns (an
:class:`~pipeline.farm.action.ActionResult`) is checked here, and only a :class:`VerifiedResult`
reaches :func:`accept`. :func:`verify_result` checks, naming the node, the worker and the field:

- every returned object hashes to its name and is within its cap, and every object is one the record
  names (nothing extra rides along);
- the record decodes as a typed build/test record (``model.records.decode``), is for the node's id
  (``check_ref``), and agrees with what the coordinator computes itself from the declaration: name,
  version, the derivation (or test plan) description, the pinned inputs, the upstream wheel;
- the rebuilt wheel has a wheel filename of this project and version, its stated size, a sane zip
  (``wheel.zipcheck``), and ``identical`` is claimed only for the upstream wheel's own bytes;
- the attestation (a build's DSSE envelope over an in-toto statement, docs/challenge.md): it must be
  the envelope the record names, verify by an :class:`AttestationCheck` (``pipeline.trust.attestation.
  verify_attestation``) against the farm's trusted builder keys, for the node's derivation id and the
  record's rebuilt wheel digest, signed by the key the record names, with the record's verdict and
  upstream wheel. A farm that names trusted keys refuses to start without a check (:func:`require_check`).

A result that fails any check raises :class:`ResultRejected`; nothing of it is stored.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import zstandard

from pipeline.farm.action import Action, ActionResult
from pipeline.farm.settings import FarmError, FarmSettings
from pipeline.model.declaration import Declaration
from pipeline.model.errors import WheelproofError
from pipeline.model.filenames import wheel_problem
from pipeline.model.records import (
    BUILD_KIND,
    TEST_KIND,
    ArtifactRef,
    BuildRecord,
    RecordError,
    TestRecord,
    check_ref,
    decode,
)
from pipeline.realise import rebuild, testing
from pipeline.realise.graph import BUILD, Node
from pipeline.store.local import Store
from pipeline.trust.attestation import VerifiedAttestation, store_attestation, store_public_key
from pipeline.trust.builder_key import BuilderPublicKey
from pipeline.wheel.zipcheck import ZipCaps, ZipCheckError, check_wheel_zip

__all__ = ["MAX_RECORD_BYTES", "MAX_LOG_BYTES", "AttestationCheck", "ResultRejected",
           "VerifiedResult", "expected_inputs", "verify_result", "accept", "require_check"]

MAX_RECORD_BYTES = 16 << 20  # a record, decompressed
MAX_LOG_BYTES = 64 << 20  # a stored (compressed) log


class ResultRejected(WheelproofError):
    """A worker's result failed verification; nothing of it was stored."""


class AttestationCheck(Protocol):
    """``verify_attestation``'s shape: verify an envelope by one of ``trusted``, for this derivation and
    rebuilt wheel (when given), or raise a :class:`WheelproofError` saying why not."""

    def __call__(self, envelope: bytes, trusted: Sequence[BuilderPublicKey], *, derivation_id: str | None = None,
                 rebuilt_sha256: str | None = None, where: str = "envelope") -> VerifiedAttestation: ...


@dataclass(frozen=True)
class VerifiedResult:
    node: Node
    decl: Declaration
    record: BuildRecord | TestRecord
    record_digest: str
    blobs: Mapping[str, bytes]
    worker: str
    attestation: bytes | None  # the verified envelope (only when the farm trusts builder keys)
    signer: BuilderPublicKey | None = None  # the trusted key it verified with


def require_check(settings: FarmSettings, check: AttestationCheck | None) -> None:
    """Refuse to run a farm that trusts builder keys but has nothing to check their signatures with."""
    if settings.requires_attestation and check is None:
        raise FarmError(f"the farm trusts {len(settings.trusted)} builder key(s) "
                        f"({', '.join(str(t.path) for t in settings.trusted)}) but this wheelproof has no "
                        "attestation verifier yet; refusing to accept results without checking their signatures")


def expected_inputs(decl: Declaration) -> dict[str, str]:
    """What a build record's ``inputs`` must say: every pinned artifact the build fetched (as
    ``rebuild.fetch_inputs`` names them)."""
    from pipeline.model.derivation import toolchain

    arts = [decl.sdist, decl.wheel_for_build(), *decl.build.all_inputs, *toolchain()]
    return {a.filename: a.sha256 for a in arts}


def _reject(node: Node, result: ActionResult, message: str) -> ResultRejected:
    return ResultRejected(f"{node.key}: result from worker {result.worker!r} rejected: {message}")


def _record_doc(data: bytes, where: str) -> object:
    try:
        with zstandard.ZstdDecompressor().stream_reader(data) as reader:
            raw = reader.read(MAX_RECORD_BYTES + 1)
    except zstandard.ZstdError as e:
        raise RecordError(f"{where}: not a zstd document ({e})") from e
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError(f"{where}: decompresses to more than {MAX_RECORD_BYTES} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise RecordError(f"{where}: not JSON ({e})") from e


def _check_blobs(node: Node, result: ActionResult, wheel_cap: int) -> None:
    if not isinstance(result.blobs, Mapping):
        raise _reject(node, result, "blobs: not a mapping")
    for name, data in result.blobs.items():
        if not isinstance(name, str) or not isinstance(data, bytes):
            raise _reject(node, result, f"blobs: entry {name!r} is not SHA-256 -> bytes")
        if len(data) > max(wheel_cap, MAX_LOG_BYTES):
            raise _reject(node, result, f"blobs[{name[:16]}]: {len(data)} bytes, over the cap")
        actual = hashlib.sha256(data).hexdigest()
        if actual != name:
            raise _reject(node, result, f"blobs[{name}]: the bytes hash to {actual}, not to their name")


def _check_wheel(store: Store, node: Node, result: ActionResult, record: BuildRecord, decl: Declaration) -> None:
    out = record.output
    if out is None:
        return
    if problem := wheel_problem(out.filename, decl.canonical_name, decl.version):
        raise _reject(node, result, f"record output.filename {out.filename!r}: {problem}")
    data = result.blobs.get(out.sha256)
    if data is None:
        raise _reject(node, result, f"record output.sha256 {out.sha256}: the wheel was not returned")
    if len(data) != out.size:
        raise _reject(node, result, f"record output.size {out.size}: the wheel has {len(data)} bytes")
    if (record.verdict == "identical") != (out.sha256 == decl.wheel_for_build().sha256):
        raise _reject(node, result, f"record verdict {record.verdict!r} contradicts the hashes: rebuilt "
                                    f"{out.sha256}, upstream {decl.wheel_for_build().sha256}")
    limits = decl.build.limits
    with tempfile.TemporaryDirectory(dir=store.tmp, prefix="farm-") as tmp:
        path = Path(tmp) / out.filename
        path.write_bytes(data)
        try:
            check_wheel_zip(path, ZipCaps(unpacked=limits.wheel_unpacked, ratio=limits.ratio),
                            where=f"{out.filename} from worker {result.worker!r}")
        except ZipCheckError as e:
            raise _reject(node, result, str(e)) from e


def _check_build(store: Store, node: Node, result: ActionResult, record: BuildRecord, decl: Declaration) -> None:
    drv = rebuild.derivation(decl)
    upstream = decl.wheel_for_build()
    checks = [
        ("name", record.name == decl.canonical_name, record.name),
        ("version", record.version == decl.version, record.version),
        ("derivation", json.loads(json.dumps(record.derivation)) == drv.description(), "another description"),
        ("sandbox", record.sandbox == drv.sandbox, record.sandbox),
        ("inputs", dict(record.inputs) == expected_inputs(decl), "other artifacts than the declaration pins"),
        ("upstream", record.upstream == ArtifactRef(upstream.filename, upstream.sha256), record.upstream.sha256),
    ]
    for field, ok, found in checks:
        if not ok:
            raise _reject(node, result, f"record {field}: {found!r} is not what {decl.path} gives")
    _check_wheel(store, node, result, record, decl)


def _check_test(node: Node, result: ActionResult, record: TestRecord, decl: Declaration,
                decls: Mapping[str, Declaration]) -> None:
    plan = testing.plan(decl, decls)
    checks = [
        ("name", record.name == decl.canonical_name, record.name),
        ("version", record.version == decl.version, record.version),
        ("plan", json.loads(json.dumps(record.plan)) == plan.description(), "another plan"),
        ("derivation_id", record.derivation_id == rebuild.derivation(decl).id, record.derivation_id),
    ]
    for field, ok, found in checks:
        if not ok:
            raise _reject(node, result, f"record {field}: {found!r} is not what {decl.path} gives")


def _check_attestation(node: Node, result: ActionResult, record: BuildRecord, settings: FarmSettings,
                       check: AttestationCheck | None) -> VerifiedAttestation | None:
    if not settings.requires_attestation or node.kind != BUILD:
        return None
    if check is None:  # require_check refuses this set-up before anything is submitted
        raise _reject(node, result, "no attestation verifier")
    if result.attestation is None or record.attestation is None:
        raise _reject(node, result, "no attestation, and the farm accepts only attested builds")
    if hashlib.sha256(result.attestation).hexdigest() != record.attestation.sha256:
        raise _reject(node, result, f"attestation: not the envelope the record names ({record.attestation.sha256})")
    try:
        claims = check(result.attestation, [t.key for t in settings.trusted], derivation_id=node.id,
                       rebuilt_sha256=record.output.sha256 if record.output is not None else None,
                       where=f"attestation {record.attestation.sha256[:12]}")
    except WheelproofError as e:
        raise _reject(node, result, str(e)) from e
    if claims.key_id != record.attestation.key_id:
        raise _reject(node, result, f"attestation: signed by {claims.key_id}, the record names "
                                    f"{record.attestation.key_id}")
    if claims.verdict != record.verdict:
        raise _reject(node, result, f"attestation: verdict {claims.verdict!r}, the record says {record.verdict!r}")
    if claims.upstream_sha256 != record.upstream.sha256:
        raise _reject(node, result, f"attestation: upstream {claims.upstream_sha256}, the record says "
                                    f"{record.upstream.sha256}")
    if record.output is None and claims.rebuilt_sha256 is not None:
        raise _reject(node, result, f"attestation: a rebuilt wheel {claims.rebuilt_sha256}, the record has none")
    return claims


def verify_result(store: Store, node: Node, action: Action, result: ActionResult,
                  decls: Mapping[str, Declaration], settings: FarmSettings,
                  check: AttestationCheck | None = None) -> VerifiedResult:
    """Every check above, or :class:`ResultRejected` naming the first that failed."""
    if not isinstance(result, ActionResult):
        raise ResultRejected(f"{node.key}: the worker returned a {type(result).__name__}, not an ActionResult")
    if result.action_digest != action.digest or result.kind != node.kind or result.node_id != node.id:
        raise _reject(node, result, f"it answers action {result.action_digest[:16]} ({result.kind} "
                                    f"{result.node_id[:12]}), not {action.digest[:16]} ({node.kind} {node.id[:12]})")
    decl = decls[node.name]
    _check_blobs(node, result, decl.build.limits.wheel_size)
    if result.record not in result.blobs:
        raise _reject(node, result, f"the record {result.record} was not returned")
    where = f"record of {node.key} from worker {result.worker!r}"
    record: BuildRecord | TestRecord
    try:
        doc = _record_doc(result.blobs[result.record], where)
        if node.kind == BUILD:
            record = check_ref(decode(BuildRecord, doc, where), node.id, where)
        else:
            record = check_ref(decode(TestRecord, doc, where), node.id, where)
    except RecordError as e:
        raise _reject(node, result, str(e)) from e
    if isinstance(record, BuildRecord):
        _check_build(store, node, result, record, decl)
        claims = _check_attestation(node, result, record, settings, check)
        pinned = set(expected_inputs(decl).values())
    else:
        _check_test(node, result, record, decl, decls)
        pinned, claims = set(), None
    if record.log.sha256 not in result.blobs:
        raise _reject(node, result, f"record log.sha256 {record.log.sha256}: the log was not returned")
    named = set(record.references) | {record.log.sha256} | ({record.output.sha256} if isinstance(
        record, BuildRecord) and record.output else set())
    if missing := sorted(named - pinned - set(result.blobs)):
        raise _reject(node, result, f"record references {missing[0]}, which was neither returned nor pinned")
    if extra := sorted(set(result.blobs) - named - {result.record}):
        raise _reject(node, result, f"returned object {extra[0]}, which the record does not name")
    signer = next((t.key for t in settings.trusted if claims and t.key_id == claims.key_id), None)
    return VerifiedResult(node, decl, record, result.record, dict(result.blobs), result.worker,
                          result.attestation if claims else None, signer)


def accept(store: Store, verified: VerifiedResult) -> None:
    """Store a verified result: its objects first (each re-hashed by the store), then the ref."""
    node, record = verified.node, verified.record
    with store.shared():
        for digest, data in sorted(verified.blobs.items()):
            if store.put_bytes(data) != digest:  # put_bytes names the object by its own hash
                raise ResultRejected(f"{node.key}: object {digest} changed while being stored")
        if verified.attestation is not None and verified.signer is not None:
            # as a local build stores its own (refs/attestations/<drv>.<key id>, refs/builder-keys/<key id>)
            store_public_key(store, verified.signer)
            store_attestation(store, node.id, verified.signer.key_id, verified.attestation)
        store.set_ref(BUILD_KIND if node.kind == BUILD else TEST_KIND, node.id, verified.record_digest)
        if isinstance(record, TestRecord):
            testing.attach_to_build_record(store, verified.decl, record)

