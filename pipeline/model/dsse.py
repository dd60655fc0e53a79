"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1 and envelope.md): pure encoding.

An envelope is JSON ``{"payload": base64(body), "payloadType": TYPE, "signatures": [{"keyid": K,
"sig": base64(sig)}]}``. A signature is never over the payload alone but over the
Pre-Authentication Encoding::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

with LEN the ASCII decimal byte length (no leading zeros) and SP one space, so no (type, body) pair
can be re-read as another. Key handling is in :mod:`pipeline.trust.attestation`; this module only
encodes and parses, treating every envelope as hostile (size cap, strict base64, exact types).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from pipeline.model.errors import IntegrityError

__all__ = ["INTOTO_PAYLOAD_TYPE", "MAX_ENVELOPE_BYTES", "Envelope", "EnvelopeError", "Signature", "pae"]

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
MAX_ENVELOPE_BYTES = 4 << 20


class EnvelopeError(IntegrityError):
    """An envelope is malformed, unsigned by a trusted key, or not about what it is claimed to be."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding (protocol.md)."""
    t = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def encode(self) -> bytes:
        """Canonical bytes (sorted keys, no spaces): the same envelope always has the same digest."""
        doc = {"payload": base64.b64encode(self.payload).decode(), "payloadType": self.payload_type,
               "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, where: str) -> Envelope:
        """Parse an envelope; :class:`EnvelopeError` names ``where`` and the bad field."""
        if len(data) > MAX_ENVELOPE_BYTES:
            raise EnvelopeError(f"{where}: {len(data)} bytes, over the {MAX_ENVELOPE_BYTES}-byte cap for an envelope")
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise EnvelopeError(f"{where}: not a DSSE envelope (not JSON: {e})") from e
        if not isinstance(doc, dict):
            raise EnvelopeError(f"{where}: not a DSSE envelope (not a JSON object)")
        payload_type, sigs = doc.get("payloadType"), doc.get("signatures")
        if not isinstance(payload_type, str):
            raise EnvelopeError(f"{where}: payloadType: expected a string")
        if not isinstance(sigs, list) or not sigs:
            raise EnvelopeError(f"{where}: signatures: expected a non-empty list")
        payload = _b64(doc.get("payload"), f"{where}: payload")
        signatures = []
        for i, s in enumerate(sigs):
            if not isinstance(s, dict) or not isinstance(s.get("keyid", ""), str):
                raise EnvelopeError(f"{where}: signatures[{i}]: expected {{keyid, sig}}")
            signatures.append(Signature(s.get("keyid", ""), _b64(s.get("sig"), f"{where}: signatures[{i}].sig")))
        return cls(payload, payload_type, tuple(signatures))


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise EnvelopeError(f"{where}: expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EnvelopeError(f"{where}: bad base64 ({e})") from e
