"""Ed25519 signing in two standard formats, with one key.

minisign (https://jedisct1.github.io/minisign/): public key ``"Ed" ‖ key id ‖ pk``; unencrypted secret
key ``"Ed" ‖ "\\0\\0" ‖ "B2" ‖ salt ‖ opslimit ‖ memlimit ‖ key id ‖ sk ‖ BLAKE2b-256 checksum``;
signatures are pre-hashed (``"ED"``: Ed25519 over BLAKE2b-512 of the file) with a global signature
over ``signature ‖ trusted comment``, so stock ``minisign -V`` verifies them.

C2SP signed notes (https://c2sp.org/signed-note): the key name plus a 4-byte key hash
SHA-256(name ‖ "\\n" ‖ 0x01 ‖ pk)[:4]; signature lines ``— <name> base64(hash ‖ sig)``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.model.errors import WheelproofError

SECRET_KEY_ENV = "WHEELPROOF_SECRET_KEY"
DEFAULT_SECRET_KEY = Path("~/.config/wheelproof/release.key").expanduser()
EM_DASH = "\u2014"


class SignatureError(WheelproofError):
    """A signature, key or signed document failed verification."""


def _key_blob(text: str, kind: str) -> bytes:
    """The base64 line of a minisign key file (after its untrusted comment)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        return base64.b64decode(lines[-1], validate=True)
    except (IndexError, ValueError):
        raise SignatureError(f"not a minisign {kind} key") from None


@dataclass(frozen=True)
class PublicKey:
    key_id: bytes  # 8 bytes, minisign's key number
    raw: bytes     # 32 bytes

    @property
    def key_id_hex(self) -> str:
        return int.from_bytes(self.key_id, "little").to_bytes(8, "big").hex().upper()

    def minisign(self) -> str:
        blob = base64.b64encode(b"Ed" + self.key_id + self.raw).decode()
        return f"untrusted comment: minisign public key {self.key_id_hex}\n{blob}\n"

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        blob = _key_blob(text, "public")
        if len(blob) != 42 or blob[:2] != b"Ed":
            raise SignatureError("not a minisign Ed25519 public key")
        return cls(blob[2:10], blob[10:])

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
            return True
        except InvalidSignature:
            return False

    # C2SP signed-note identity
    def note_hash(self, name: str) -> bytes:
        return hashlib.sha256(name.encode() + b"\n\x01" + self.raw).digest()[:4]

    def vkey(self, name: str) -> str:
        encoded = base64.b64encode(bytes([1]) + self.raw).decode()
        return f"{name}+{self.note_hash(name).hex()}+{encoded}"


@dataclass(frozen=True)
class SecretKey:
    key_id: bytes
    seed: bytes  # 32 bytes

    @property
    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key_id, self._private.public_key().public_bytes_raw())

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @classmethod
    def generate(cls) -> SecretKey:
        return cls(os.urandom(8), Ed25519PrivateKey.generate().private_bytes_raw())

    def minisign(self) -> str:
        sk = self.seed + self.public.raw
        checksum = hashlib.blake2b(b"Ed" + self.key_id + sk, digest_size=32).digest()
        blob = b"Ed" + b"\0\0" + b"B2" + bytes(32) + bytes(8) + bytes(8) + self.key_id + sk + checksum
        return f"untrusted comment: minisign secret key (unencrypted)\n{base64.b64encode(blob).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> SecretKey:
        blob = _key_blob(text, "secret")
        if len(blob) != 158 or blob[:2] != b"Ed" or blob[4:6] != b"B2":
            raise SignatureError("not a minisign Ed25519 secret key")
        if blob[2:4] != b"\0\0":
            raise SignatureError("encrypted minisign secret keys are not supported: generate one with "
                                 "`python -m pipeline keygen` (or `minisign -G -W`)")
        key_id, sk, checksum = blob[54:62], blob[62:126], blob[126:158]
        if hashlib.blake2b(b"Ed" + key_id + sk, digest_size=32).digest() != checksum:
            raise SignatureError("secret key checksum mismatch")
        key = cls(key_id, sk[:32])
        if key.public.raw != sk[32:]:
            raise SignatureError("secret key does not match its public half")
        return key


def minisign_sign(key: SecretKey, message: bytes, trusted_comment: str,
                  untrusted_comment: str = "signature from wheelproof") -> str:
    if "\n" in trusted_comment:
        raise ValueError("trusted comments are one line")
    digest = hashlib.blake2b(message, digest_size=64).digest()
    signature = key.sign(digest)
    global_sig = key.sign(signature + trusted_comment.encode())
    return (f"untrusted comment: {untrusted_comment}\n"
            f"{base64.b64encode(b'ED' + key.key_id + signature).decode()}\n"
            f"trusted comment: {trusted_comment}\n{base64.b64encode(global_sig).decode()}\n")


def minisign_verify(public: PublicKey, message: bytes, sig_text: str) -> str:
    """Verify a .minisig; returns the trusted comment. Raises :class:`SignatureError`."""
    lines = sig_text.splitlines()
    if len(lines) < 4 or not lines[2].startswith("trusted comment: "):
        raise SignatureError("malformed minisign signature file")
    try:
        blob = base64.b64decode(lines[1], validate=True)
        global_sig = base64.b64decode(lines[3], validate=True)
    except ValueError:
        raise SignatureError("malformed minisign signature (base64)") from None
    if len(blob) != 74 or blob[:2] not in (b"ED", b"Ed"):
        raise SignatureError("malformed minisign signature")
    if blob[2:10] != public.key_id:
        raise SignatureError(f"signed by another key (key id {PublicKey(blob[2:10], b'').key_id_hex}, "
                             f"expected {public.key_id_hex})")
    signed = hashlib.blake2b(message, digest_size=64).digest() if blob[:2] == b"ED" else message
    if not public.verify(blob[10:], signed):
        raise SignatureError("signature does not match the signed file")
    trusted = lines[2][len("trusted comment: "):]
    if not public.verify(global_sig, blob[10:] + trusted.encode()):
        raise SignatureError("the trusted comment was altered")
    return trusted


def sign_note(key: SecretKey, name: str, text: str) -> str:
    if not text.endswith("\n"):
        raise ValueError("a note's text ends with a newline")
    sig = key.sign(text.encode())
    return f"{text}\n{EM_DASH} {name} {base64.b64encode(key.public.note_hash(name) + sig).decode()}\n"


def verify_note(public: PublicKey, name: str, note: str) -> str:
    """The note's text if a valid signature by (name, public) is on it. Raises :class:`SignatureError`."""
    text, sep, sigs = note.rpartition("\n\n")
    if not sep:
        raise SignatureError("malformed signed note: no signature block")
    text += "\n"
    expected = public.note_hash(name)
    for line in sigs.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH or parts[1] != name:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        if blob[:4] == expected and public.verify(blob[4:], text.encode()):
            return text
    raise SignatureError(f"no valid signature by {name} ({expected.hex()}) on the note")


def load_secret_key(path: Path | None = None) -> SecretKey:
    path = Path(path or os.environ.get(SECRET_KEY_ENV) or DEFAULT_SECRET_KEY)
    try:
        return SecretKey.parse(path.read_text())
    except FileNotFoundError:
        raise SignatureError(f"no secret key at {path}: create one with `python -m pipeline keygen` "
                             f"(or set {SECRET_KEY_ENV})") from None


def write_keypair(secret_path: Path, public_path: Path) -> SecretKey:
    if secret_path.exists():
        raise SignatureError(f"{secret_path} exists; refusing to overwrite a secret key")
    key = SecretKey.generate()
    secret_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.minisign())
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_text(key.public.minisign())
    return key
