"""Attestations at publication: which go into a snapshot, and K-of-N enforcement before publishing.

Nix's ``nix store verify --sigs-needed N`` asks for N trusted signatures on a store path; here ``doit
snapshot --require-attestations K --trusted-keys FILE`` asks that K distinct trusted builders each sign
an attestation (:func:`pipeline.trust.attestation.verify_attestation`) of the project's current
derivation whose rebuilt-wheel subject is this store's rebuilt digest. A refusal names the
declaration, the builders that attested another digest, and how many agreed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipeline.export.snapshot import PublishedAttestation, PublishedWheel
from pipeline.model.dsse import EnvelopeError
from pipeline.model.records import BuildRecord
from pipeline.store.local import Store
from pipeline.trust.attestation import stored_attestations, stored_public_keys, verify_attestation
from pipeline.trust.builder_key import BuilderPublicKey

__all__ = ["attestation_refusals", "published_attestations"]


def published_attestations(store: Store, published: Sequence[PublishedWheel]
                           ) -> tuple[list[PublishedAttestation], dict[str, bytes]]:
    """Every stored attestation of a published derivation that verifies with its signer's stored key
    (agreeing or not: a snapshot shows disagreement too), and those keys' PEM."""
    keys = stored_public_keys(store)
    out: dict[tuple[str, str], PublishedAttestation] = {}
    for w in published:
        for drv, key_id, envelope in stored_attestations(store, w.derivation_id):
            key = keys.get(key_id)
            if key is None or (w.project, key_id) in out:
                continue
            try:
                v = verify_attestation(envelope, [key], derivation_id=drv,
                                       where=f"attestation {drv[:12]}.{key_id[:12]}")
            except EnvelopeError:
                continue  # not publishable; `challenge` reports why
            out[(w.project, key_id)] = PublishedAttestation(w.project, drv, key_id, envelope, v.envelope_sha256,
                                                             v.rebuilt_sha256, v.verdict)
    used = {a.key_id for a in out.values()}
    return list(out.values()), {k: keys[k].pem().encode() for k in sorted(used)}


def attestation_refusals(store: Store, records: Mapping[str, BuildRecord], paths: Mapping[str, str],
                         trusted: Sequence[BuilderPublicKey], required: int) -> list[str]:
    """One line per project that fewer than ``required`` trusted builders attest as this store built it."""
    refusals = []
    short = {k.key_id: k.key_id[:16] for k in trusted}
    for name, record in sorted(records.items()):
        if record.output is None:
            continue  # a failed build is refused by the publishing policy itself
        agree, disagree, bad = set(), [], []
        for drv, key_id, envelope in stored_attestations(store, record.derivation_id):
            try:
                v = verify_attestation(envelope, trusted, derivation_id=drv, where=f"{key_id[:16]}")
            except EnvelopeError as e:
                if key_id in short:
                    bad.append(str(e))
                continue
            if v.rebuilt_sha256 == record.output.sha256:
                agree.add(v.key_id)
            else:
                disagree.append(f"{short[v.key_id]} attests {(v.rebuilt_sha256 or 'a failed build')[:12]} "
                                f"({v.verdict})")
        if len(agree) < required:
            why = [f"{len(agree)} of {required} required trusted builders attest the rebuilt wheel "
                   f"{record.output.filename} sha256 {record.output.sha256[:12]}"]
            why += [f"agreed: {', '.join(sorted(short[k] for k in agree))}"] if agree else []
            why += [f"disagreed: {'; '.join(disagree)}"] if disagree else []
            why += [f"rejected: {'; '.join(bad)}"] if bad else []
            refusals.append(f"{paths.get(name, name)}: " + "; ".join(why))
    return refusals
