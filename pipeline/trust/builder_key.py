"""A builder's identity: an Ed25519 key (RFC 8032) whose public half is published as PEM.

The secret key is PKCS#8 PEM (RFC 5958), mode 0600, at ``$WHEELPROOF_BUILDER_KEY`` or
``~/.config/wheelproof/builder.key``; it is never written into a store or a snapshot (creating or
using one inside the store is refused). The public key is a SubjectPublicKeyInfo PEM (RFC 5280,
RFC 8410); its key id is the SHA-256 of the SubjectPublicKeyInfo DER in lowercase hex, so an id names
exactly one key and a trusted-keys file needs no separate ids. A trusted-keys file is PEM public keys
one after another, as ``python -m pipeline builder-key --public`` prints them.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.model.errors import WheelproofError

__all__ = ["BUILDER_KEY_ENV", "DEFAULT_BUILDER_KEY", "BuilderKey", "BuilderKeyError", "BuilderPublicKey",
           "builder_key_path", "create_builder_key", "load_builder_key", "load_trusted_keys", "parse_public_keys"]

BUILDER_KEY_ENV = "WHEELPROOF_BUILDER_KEY"
DEFAULT_BUILDER_KEY = Path("~/.config/wheelproof/builder.key")
_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----\r?\n.*?-----END PUBLIC KEY-----", re.S)
MAX_KEYS_FILE = 1 << 20


class BuilderKeyError(WheelproofError):
    """A builder key is missing, malformed, or somewhere it must not be."""


@dataclass(frozen=True)
class BuilderPublicKey:
    spki: bytes  # SubjectPublicKeyInfo, DER

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.spki).hexdigest()

    @property
    def crypto(self) -> Ed25519PublicKey:
        key = serialization.load_der_public_key(self.spki)
        if not isinstance(key, Ed25519PublicKey):
            raise BuilderKeyError(f"key {self.key_id[:16]} is not an Ed25519 key")
        return key

    def pem(self) -> str:
        return self.crypto.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.crypto.verify(signature, message)
            return True
        except InvalidSignature:
            return False

    @classmethod
    def from_pem(cls, pem: bytes, where: str) -> BuilderPublicKey:
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as e:
            raise BuilderKeyError(f"{where}: not a PEM public key ({e})") from e
        if not isinstance(key, Ed25519PublicKey):
            raise BuilderKeyError(f"{where}: not an Ed25519 public key (builder keys are Ed25519)")
        return cls(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


@dataclass(frozen=True)
class BuilderKey:
    private: Ed25519PrivateKey
    path: Path

    @property
    def public(self) -> BuilderPublicKey:
        return BuilderPublicKey(self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def builder_key_path(path: Path | str | None = None) -> Path:
    return Path(path or os.environ.get(BUILDER_KEY_ENV) or DEFAULT_BUILDER_KEY).expanduser()


def _refuse_inside(path: Path, refuse_inside: Iterable[Path]) -> None:
    resolved = path.resolve()
    for d in refuse_inside:
        if resolved.is_relative_to(d.resolve()):
            raise BuilderKeyError(f"{path}: a builder's secret key may not live inside {d} "
                                  f"(set {BUILDER_KEY_ENV} to a path outside it)")


def create_builder_key(path: Path, refuse_inside: Iterable[Path] = ()) -> BuilderKey:
    """A new key at ``path`` (mode 0600, never overwriting one)."""
    _refuse_inside(path, refuse_inside)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError as e:
        raise FileExistsError(f"{path} exists; refusing to overwrite a builder key") from e
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return BuilderKey(private, path)


def load_builder_key(path: Path | None = None, refuse_inside: Iterable[Path] = ()) -> BuilderKey:
    path = builder_key_path(path)
    _refuse_inside(path, refuse_inside)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BuilderKeyError(f"no builder key at {path}: create one with `python -m pipeline builder-key` "
                              f"(or set {BUILDER_KEY_ENV})") from None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise BuilderKeyError(f"{path}: not an unencrypted PKCS#8 PEM private key ({e})") from e
    if not isinstance(private, Ed25519PrivateKey):
        raise BuilderKeyError(f"{path}: not an Ed25519 key (builder keys are Ed25519)")
    return BuilderKey(private, path)


def parse_public_keys(data: bytes, where: str) -> list[BuilderPublicKey]:
    """Every PEM public key in ``data`` (other text, such as ``key id`` lines, is ignored)."""
    blocks = _PEM.findall(data)
    if not blocks:
        raise BuilderKeyError(f"{where}: no PEM public key (-----BEGIN PUBLIC KEY-----) in it")
    return [BuilderPublicKey.from_pem(b, f"{where}: key {i + 1}") for i, b in enumerate(blocks)]


def load_trusted_keys(path: Path) -> Sequence[BuilderPublicKey]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEYS_FILE + 1)
    except OSError as e:
        raise BuilderKeyError(f"--trusted-keys {path}: {e.strerror}") from e
    if len(data) > MAX_KEYS_FILE:
        raise BuilderKeyError(f"--trusted-keys {path}: over {MAX_KEYS_FILE} bytes")
    return parse_public_keys(data, str(path))
