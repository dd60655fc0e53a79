"""Hostile attestations: every envelope is refused unless a trusted key signed exactly this statement
over the DSSE PAE, for the derivation and wheel it is used for (pipeline/trust/attestation.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import SSlibKey

from pipeline.model.dsse import INTOTO_PAYLOAD_TYPE, Envelope, EnvelopeError, Signature, pae
from pipeline.model.records import AttestationRef, OutputWheel
from pipeline.store.local import Store
from pipeline.trust.attestation import sign_record, store_attestation, store_public_key, verify_attestation
from pipeline.trust.builder_key import create_builder_key
from pipeline.trust.challenge import challenge, open_source

from ..conftest import build_record

DRV = "d" * 64


@pytest.fixture
def keys(tmp_path: Path):
    return create_builder_key(tmp_path / "a.key"), create_builder_key(tmp_path / "b.key")


def _record(drv: str = DRV, rebuilt: str = "1" * 64):
    import hashlib
    from dataclasses import replace

    from pipeline.model.derivation import canonical_json

    description = {"name": "tiny", "version": "1.0", "schema": 2, "marker": drv}
    drv_id = hashlib.sha256(canonical_json(description)).hexdigest()
    r = build_record(drv_id)
    return replace(r, derivation=description, output=OutputWheel(r.upstream.filename, rebuilt, 10))


def _resign(key, payload: bytes, payload_type: str = INTOTO_PAYLOAD_TYPE) -> bytes:
    sig = key.sign(pae(payload_type, payload))
    return Envelope(payload, payload_type, (Signature(key.public.key_id, sig),)).encode()


def test_genuine_envelope_verifies_here_and_in_securesystemslib(keys):
    a, _ = keys
    data, ref = sign_record(_record(), a)
    v = verify_attestation(data, [a.public])
    assert v.key_id == a.public.key_id == ref.key_id
    env = SslibEnvelope.from_dict(json.loads(data))
    assert list(env.verify([SSlibKey.from_crypto(a.public.crypto, keyid=a.public.key_id)], 1)) == [a.public.key_id]


def test_forged_signature_is_refused(keys):
    a, _ = keys
    data, _ = sign_record(_record(), a)
    doc = json.loads(data)
    statement = json.loads(base64.b64decode(doc["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "6" * 64  # claim another wheel, keep the signature
    doc["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(EnvelopeError, match="signature does not verify"):
        verify_attestation(json.dumps(doc).encode(), [a.public])
    sig = bytearray(base64.b64decode(json.loads(data)["signatures"][0]["sig"]))
    sig[0] ^= 1
    doc = json.loads(data)
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(EnvelopeError, match="signature does not verify"):
        verify_attestation(json.dumps(doc).encode(), [a.public])


def test_wrong_payload_type_is_refused_even_when_validly_signed(keys):
    a, _ = keys
    data, _ = sign_record(_record(), a)
    payload = Envelope.decode(data, "x").payload
    with pytest.raises(EnvelopeError, match="payloadType 'application/json' is not"):
        verify_attestation(_resign(a, payload, "application/json"), [a.public])


def test_pae_confusion_is_refused(keys):
    """A signature over type‖payload (no PAE), or over a PAE whose split between type and payload is
    shifted, never verifies for the envelope presented."""
    a, _ = keys
    data, _ = sign_record(_record(), a)
    payload = Envelope.decode(data, "x").payload
    naive = a.sign(INTOTO_PAYLOAD_TYPE.encode() + payload)
    forged = Envelope(payload, INTOTO_PAYLOAD_TYPE, (Signature(a.public.key_id, naive),)).encode()
    with pytest.raises(EnvelopeError, match="not signed over the DSSE PAE"):
        verify_attestation(forged, [a.public])
    shifted = a.sign(pae(INTOTO_PAYLOAD_TYPE[:-1], INTOTO_PAYLOAD_TYPE[-1:].encode() + payload))
    forged = Envelope(payload, INTOTO_PAYLOAD_TYPE, (Signature(a.public.key_id, shifted),)).encode()
    with pytest.raises(EnvelopeError, match="signature does not verify"):
        verify_attestation(forged, [a.public])


def test_key_not_trusted_is_refused(keys):
    a, b = keys
    data, _ = sign_record(_record(), b)
    with pytest.raises(EnvelopeError, match=f"signed by key {b.public.key_id[:16]}, which is not a trusted key"):
        verify_attestation(data, [a.public])
    # a keyid claiming a trusted key does not help: the signature is checked, not the hint
    doc = json.loads(data)
    doc["signatures"][0]["keyid"] = a.public.key_id
    with pytest.raises(EnvelopeError, match="signature does not verify"):
        verify_attestation(json.dumps(doc).encode(), [a.public])


def test_subject_digest_mismatch_is_refused(keys):
    a, _ = keys
    data, _ = sign_record(_record(rebuilt="1" * 64), a)
    with pytest.raises(EnvelopeError, match="rebuilt wheel's sha256 is 222222222222 but the attestation's subject"):
        verify_attestation(data, [a.public], rebuilt_sha256="2" * 64)


def test_replayed_envelope_for_another_derivation_is_refused(keys, tmp_path):
    a, _ = keys
    mine, other = _record("x"), _record("y")
    data, _ = sign_record(other, a)
    with pytest.raises(EnvelopeError, match=f"attests derivation {other.derivation_id[:12]} .* not "
                                            f"{mine.derivation_id[:12]}: refused"):
        verify_attestation(data, [a.public], derivation_id=mine.derivation_id)
    # a statement whose derivationId is not the hash of its description is refused too
    doc = json.loads(Envelope.decode(data, "x").payload)
    doc["predicate"]["buildDefinition"]["externalParameters"]["derivationId"] = mine.derivation_id
    with pytest.raises(EnvelopeError, match="is not the hash of the derivation it describes"):
        verify_attestation(_resign(a, json.dumps(doc).encode()), [a.public])


def test_challenge_reports_rejected_and_untrusted_envelopes_and_fails(keys, tmp_path):
    a, b = keys
    store = Store(tmp_path / "store")
    good, _ = sign_record(_record(), a)
    store_public_key(store, a.public)
    store_attestation(store, _record().derivation_id, a.public.key_id, good)
    doc = json.loads(good)
    doc["payloadType"] = "text/plain"
    store_attestation(store, "e" * 64, a.public.key_id, json.dumps(doc).encode())
    stranger, _ = sign_record(_record("z"), b)
    store_attestation(store, _record("z").derivation_id, b.public.key_id, stranger)
    report = challenge([open_source(str(store.root), store)], [a.public])
    assert report.failing and report.totals()["rejected"] == 1 and report.totals()["untrusted"] == 1
    assert "payloadType 'text/plain'" in report.text()
    assert [d.status for d in report.derivations] == ["inconclusive"]


def test_hostile_export_directory(keys, tmp_path):
    """Symlinks, oversized envelopes and mismatched names in an export are refused, nothing is read
    outside it, and import writes nothing for them."""
    from pipeline.trust.challenge import ChallengeError, import_attestations

    a, _ = keys
    export = tmp_path / "export"
    (export / "attestations" / "tiny").mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (export / "attestations" / "tiny" / f"{'a' * 64}.{'b' * 64}.intoto.json").symlink_to(secret)
    source = open_source(str(export), Store(tmp_path / "s"))
    with pytest.raises(ChallengeError, match="only regular files are read"):
        list(source.envelopes())
    (export / "attestations" / "tiny" / f"{'a' * 64}.{'b' * 64}.intoto.json").unlink()
    good, _ = sign_record(_record(), a)
    misnamed = export / "attestations" / "tiny" / f"{'a' * 64}.{a.public.key_id}.intoto.json"
    misnamed.write_bytes(good)
    (export / "builders").mkdir()
    (export / "builders" / f"{a.public.key_id}.pem").write_text(a.public.pem())
    local = Store(tmp_path / "local")
    n, problems = import_attestations(local, open_source(str(export), local))
    assert n == 0 and "does not match the envelope's derivation and signer" in problems[0]
    assert not (local.refs / "attestations").exists()


def test_attestation_ref_is_typed_in_records():
    from pipeline.model.records import BuildRecord, RecordError, decode, encode

    r = build_record(DRV)
    from dataclasses import replace

    doc = encode(replace(r, attestation=AttestationRef("a" * 64, "b" * 64)))
    assert decode(BuildRecord, doc, "x").attestation == AttestationRef("a" * 64, "b" * 64)
    doc["attestation"] = {"sha256": 5, "key_id": "b"}
    with pytest.raises(RecordError, match="attestation: sha256: expected str"):
        decode(BuildRecord, doc, "x")
