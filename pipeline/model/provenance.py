"""A rebuild as an in-toto Statement v1 with a SLSA Provenance v1 predicate: pure data, no keys.

- in-toto Statement v1: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
  (``_type`` ``https://in-toto.io/Statement/v1``; ``subject`` ResourceDescriptors with a ``sha256``
  digest; ``predicateType``; ``predicate``).
- SLSA Provenance v1: https://slsa.dev/spec/v1.0/provenance (``buildDefinition``: ``buildType``,
  ``externalParameters``, ``internalParameters``, ``resolvedDependencies``; ``runDetails``: ``builder``
  {``id``, ``version``}, ``metadata`` {``invocationId``, ``startedOn``, ``finishedOn``}, ``byproducts``).

Ours (``buildType`` :data:`BUILD_TYPE`, defined in docs/challenge.md): the subjects are the rebuilt
wheel (annotation ``wheelproof:role`` = ``rebuilt``) and the upstream wheel it was compared with
(``upstream``); ``externalParameters`` is the derivation description and its id (the id is the SHA-256
of the description's canonical JSON, checked on parsing); ``resolvedDependencies`` the sdist, every
input wheel and the frontend tools; ``builder.version`` the host facts honest builders may differ in;
the byproducts the verdict with the differing members, and the build log by digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.model.derivation import canonical_json
from pipeline.model.dsse import EnvelopeError
from pipeline.model.records import VERDICTS, BuildRecord

__all__ = ["BUILD_TYPE", "PREDICATE_TYPE", "STATEMENT_TYPE", "Provenance", "parse_statement", "statement"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://wheelproof.dev/buildtypes/rebuild/v1"
ROLE = "wheelproof:role"


def _dependencies(description: Mapping[str, Any]) -> list[dict[str, Any]]:
    deps = [("sdist", description.get("sdist"))]
    deps += [("input", a) for a in description.get("inputs", [])]
    deps += [("tool", a) for a in description.get("tools", [])]
    return [{"name": a["filename"], "digest": {"sha256": a["sha256"]}, "annotations": {ROLE: role}}
            for role, a in deps if isinstance(a, Mapping)]


def differing_members(record: BuildRecord) -> list[str]:
    c = record.comparison or {}
    return sorted({*c.get("only_upstream", []), *c.get("only_rebuild", []), *c.get("content_differs", [])})


def statement(record: BuildRecord, builder_id: str) -> bytes:
    """The statement a builder signs for ``record`` (canonical JSON bytes)."""
    subjects = []
    if record.output is not None:
        subjects.append({"name": record.output.filename, "digest": {"sha256": record.output.sha256},
                         "annotations": {ROLE: "rebuilt"}})
    subjects.append({"name": record.upstream.filename, "digest": {"sha256": record.upstream.sha256},
                     "annotations": {ROLE: "upstream"}})
    verdict: dict[str, Any] = {"verdict": record.verdict, "summary": record.summary or record.error or "",
                               "differing": differing_members(record)}
    if record.determinism is not None:
        verdict["deterministic"] = bool(record.determinism.get("deterministic"))
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"derivation": record.derivation, "derivationId": record.derivation_id},
                "internalParameters": {"sandbox": record.sandbox},
                "resolvedDependencies": _dependencies(record.derivation),
            },
            "runDetails": {
                "builder": {"id": builder_id, "version": record.host.to_json() if record.host else {}},
                "metadata": {"invocationId": record.derivation_id, "startedOn": record.started,
                             "finishedOn": record.finished or record.started},
                "byproducts": [{"name": "verdict", "annotations": verdict},
                               {"name": "build.log", "digest": {"sha256": record.log.sha256},
                                "mediaType": "application/zstd"}],
            },
        },
    }
    return canonical_json(doc)


@dataclass(frozen=True)
class Provenance:
    """What a verified statement says (the fields a checker compares)."""

    name: str
    version: str
    derivation_id: str
    derivation: Mapping[str, Any]
    rebuilt: tuple[str, str] | None   # (filename, sha256); None for a failed build
    upstream: tuple[str, str]
    verdict: str
    summary: str
    differing: tuple[str, ...]
    builder_id: str
    host: Mapping[str, str]
    started: str
    finished: str


def _get(doc: Any, path: str, kind: type, where: str) -> Any:
    value = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise EnvelopeError(f"{where}: statement field {path}: missing")
        value = value[part]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EnvelopeError(f"{where}: statement field {path}: expected {kind.__name__}")
    return value


def _sha256(descriptor: Any, where: str) -> tuple[str, str]:
    name, digest = _get(descriptor, "name", str, where), _get(descriptor, "digest.sha256", str, where)
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise EnvelopeError(f"{where}: {name}: sha256 {digest!r} is not 64 lowercase hex digits")
    return name, digest


def parse_statement(payload: bytes, where: str) -> Provenance:
    """Check a statement is ours, field by field; the derivation id must be the description's hash."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise EnvelopeError(f"{where}: the payload is not JSON ({e})") from e
    if _get(doc, "_type", str, where) != STATEMENT_TYPE:
        raise EnvelopeError(f"{where}: _type {doc['_type']!r} is not {STATEMENT_TYPE}")
    if _get(doc, "predicateType", str, where) != PREDICATE_TYPE:
        raise EnvelopeError(f"{where}: predicateType {doc['predicateType']!r} is not {PREDICATE_TYPE}")
    bd = "predicate.buildDefinition"
    if _get(doc, f"{bd}.buildType", str, where) != BUILD_TYPE:
        raise EnvelopeError(f"{where}: buildType {doc['predicate']['buildDefinition']['buildType']!r} "
                            f"is not {BUILD_TYPE}")
    description = _get(doc, f"{bd}.externalParameters.derivation", dict, where)
    drv_id = _get(doc, f"{bd}.externalParameters.derivationId", str, where)
    if hashlib.sha256(canonical_json(description)).hexdigest() != drv_id:
        raise EnvelopeError(f"{where}: derivationId {drv_id[:12]} is not the hash of the derivation it describes")
    roles: dict[str, tuple[str, str]] = {}
    for i, s in enumerate(_get(doc, "subject", list, where)):
        role = s.get("annotations", {}).get(ROLE) if isinstance(s, dict) and isinstance(
            s.get("annotations"), dict) else None
        if role not in ("rebuilt", "upstream") or role in roles:
            raise EnvelopeError(f"{where}: subject[{i}]: expected one rebuilt and one upstream wheel")
        roles[role] = _sha256(s, f"{where}: subject[{i}]")
    if "upstream" not in roles:
        raise EnvelopeError(f"{where}: subject: no upstream wheel")
    verdicts = [b for b in _get(doc, "predicate.runDetails.byproducts", list, where)
                if isinstance(b, dict) and b.get("name") == "verdict"]
    if len(verdicts) != 1:
        raise EnvelopeError(f"{where}: runDetails.byproducts: expected one verdict")
    verdict = _get(verdicts[0], "annotations.verdict", str, where)
    if verdict not in VERDICTS or (verdict == "failed") != ("rebuilt" not in roles):
        raise EnvelopeError(f"{where}: verdict {verdict!r} does not fit the subjects")
    differing = _get(verdicts[0], "annotations.differing", list, where)
    host = _get(doc, "predicate.runDetails.builder.version", dict, where)
    return Provenance(
        name=_get(description, "name", str, where), version=_get(description, "version", str, where),
        derivation_id=drv_id, derivation=description, rebuilt=roles.get("rebuilt"), upstream=roles["upstream"],
        verdict=verdict, summary=str(verdicts[0]["annotations"].get("summary", "")),
        differing=tuple(str(m) for m in differing), builder_id=_get(doc, "predicate.runDetails.builder.id", str, where),
        host={str(k): str(v) for k, v in host.items()},
        started=_get(doc, "predicate.runDetails.metadata.startedOn", str, where),
        finished=_get(doc, "predicate.runDetails.metadata.finishedOn", str, where))
