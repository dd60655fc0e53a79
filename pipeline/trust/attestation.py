"""Signed rebuild attestations: DSSE envelopes over in-toto Statements, signed by builder keys.

Signing (:func:`signer`) is handed to :func:`pipeline.realise.rebuild.build` by the command layer, so the
realise layer never holds a key. Verification (:func:`verify_attestation`) is the one entry point every
consumer uses (``challenge``, ``doit snapshot --require-attestations``, a build farm): an envelope is
hostile until its payloadType is in-toto's, a signature over the DSSE PAE verifies with a trusted key
(the ``keyid`` is only a hint), the statement is ours field by field, its derivation id is the hash of
the derivation it describes, and — when the caller knows them — the derivation and the rebuilt wheel
are the ones expected (a valid envelope replayed for another derivation or wheel is refused).

Store layout: ``refs/attestations/<derivation id>.<key id>`` names the envelope's bytes;
``refs/builder-keys/<key id>`` the signer's PEM public key (so a store, an export or a snapshot
carries what is needed to check it; whether to *trust* that key is the verifier's decision).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pipeline.model.dsse import INTOTO_PAYLOAD_TYPE, Envelope, EnvelopeError, Signature
from pipeline.model.provenance import Provenance, parse_statement, statement
from pipeline.model.records import AttestationRef, BuildRecord
from pipeline.store.local import Store
from pipeline.trust.builder_key import BuilderKey, BuilderPublicKey

__all__ = ["ATTESTATION_KIND", "BUILDER_ID_ENV", "KEY_KIND", "VerifiedAttestation", "builder_id",
           "sign_record", "signer", "stored_attestations", "stored_public_keys", "store_attestation",
           "store_public_key",
           "verify_attestation"]

ATTESTATION_KIND = "attestations"
KEY_KIND = "builder-keys"
BUILDER_ID_ENV = "WHEELPROOF_BUILDER_ID"


@dataclass(frozen=True)
class VerifiedAttestation:
    """An envelope that verified: who signed it, and what it says."""

    key_id: str
    envelope_sha256: str
    provenance: Provenance

    @property
    def derivation_id(self) -> str:
        return self.provenance.derivation_id

    @property
    def verdict(self) -> str:
        return self.provenance.verdict

    @property
    def rebuilt_sha256(self) -> str | None:
        return self.provenance.rebuilt[1] if self.provenance.rebuilt else None

    @property
    def upstream_sha256(self) -> str:
        return self.provenance.upstream[1]

    @property
    def subject_digests(self) -> tuple[str, ...]:
        return tuple(d for _, d in filter(None, (self.provenance.rebuilt, self.provenance.upstream)))


def builder_id(key: BuilderKey) -> str:
    return os.environ.get(BUILDER_ID_ENV) or f"urn:wheelproof:builder:{key.public.key_id[:16]}"


def sign_record(record: BuildRecord, key: BuilderKey) -> tuple[bytes, AttestationRef]:
    payload = statement(record, builder_id(key))
    unsigned = Envelope(payload, INTOTO_PAYLOAD_TYPE, ())
    envelope = Envelope(payload, INTOTO_PAYLOAD_TYPE, (Signature(key.public.key_id, key.sign(unsigned.pae())),))
    data = envelope.encode()
    return data, AttestationRef(hashlib.sha256(data).hexdigest(), key.public.key_id)


def signer(store: Store, key: BuilderKey):  # type: ignore[no-untyped-def]
    """The ``attest`` callback for :func:`pipeline.realise.rebuild.build`: sign, store, name it."""
    store_public_key(store, key.public)

    def attest(record: BuildRecord) -> tuple[bytes, AttestationRef]:
        data, ref = sign_record(record, key)
        store_attestation(store, record.derivation_id, ref.key_id, data)
        return data, ref

    return attest


def store_public_key(store: Store, public: BuilderPublicKey) -> None:
    store.set_ref(KEY_KIND, public.key_id, store.put_bytes(public.pem().encode()))


def store_attestation(store: Store, derivation_id: str, key_id: str, envelope: bytes) -> str:
    digest = store.put_bytes(envelope)
    store.set_ref(ATTESTATION_KIND, f"{derivation_id}.{key_id}", digest)
    return digest


def stored_public_keys(store: Store) -> dict[str, BuilderPublicKey]:
    """The builder keys a store has seen (their ids are checked against their bytes)."""
    out = {}
    for _, name, digest in store.list_refs(KEY_KIND) if (store.refs / KEY_KIND).is_dir() else ():
        key = BuilderPublicKey.from_pem(store.read_bytes(digest), f"{store.root}/refs/{KEY_KIND}/{name}")
        if key.key_id == name:
            out[name] = key
    return out


def stored_attestations(store: Store, derivation_id: str | None = None) -> Iterator[tuple[str, str, bytes]]:
    """(derivation id, key id, envelope bytes) of every stored attestation (of one derivation)."""
    if not (store.refs / ATTESTATION_KIND).is_dir():
        return
    for _, name, digest in store.list_refs(ATTESTATION_KIND):
        drv, _, key_id = name.partition(".")
        if derivation_id is None or drv == derivation_id:
            yield drv, key_id, store.read_bytes(digest)


def verify_attestation(envelope: bytes, trusted: Sequence[BuilderPublicKey], *, derivation_id: str | None = None,
                       rebuilt_sha256: str | None = None, where: str = "envelope") -> VerifiedAttestation:
    """Verify a DSSE envelope of a rebuild against ``trusted`` keys; :class:`EnvelopeError` says why not."""
    env = Envelope.decode(envelope, where)
    if env.payload_type != INTOTO_PAYLOAD_TYPE:
        raise EnvelopeError(f"{where}: payloadType {env.payload_type!r} is not {INTOTO_PAYLOAD_TYPE!r}")
    if not trusted:
        raise EnvelopeError(f"{where}: no trusted keys to verify it with")
    message = env.pae()
    signer_id = next((k.key_id for k in trusted for s in env.signatures if k.verify(s.sig, message)), None)
    if signer_id is None:
        ids = {k.key_id for k in trusted}
        claimed = sorted({s.keyid for s in env.signatures})
        if not ids & set(claimed):
            raise EnvelopeError(f"{where}: signed by key {', '.join(c[:16] or '(no keyid)' for c in claimed)}, "
                                "which is not a trusted key")
        raise EnvelopeError(f"{where}: the signature does not verify (the payload or its type was altered, "
                            "or it was not signed over the DSSE PAE)")
    provenance = parse_statement(env.payload, where)
    if derivation_id is not None and provenance.derivation_id != derivation_id:
        raise EnvelopeError(f"{where}: attests derivation {provenance.derivation_id[:12]} "
                            f"({provenance.name} {provenance.version}), not {derivation_id[:12]}: refused")
    if rebuilt_sha256 is not None and (provenance.rebuilt is None or provenance.rebuilt[1] != rebuilt_sha256):
        got = provenance.rebuilt[1][:12] if provenance.rebuilt else "no rebuilt wheel"
        raise EnvelopeError(f"{where}: the rebuilt wheel's sha256 is {rebuilt_sha256[:12]} but the attestation's "
                            f"subject is {got}")
    return VerifiedAttestation(signer_id, hashlib.sha256(envelope).hexdigest(), provenance)
