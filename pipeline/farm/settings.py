"""Farm settings: where the scheduler is, and which builder keys the coordinator trusts.

``WHEELPROOF_FARM=tcp://HOST:PORT`` turns the farm on for ``doit build``/``test``/``snapshot``.
``WHEELPROOF_FARM_TRUSTED`` names the builder public keys whose attestations the coordinator accepts,
in the format ``challenge --trusted-keys`` and ``doit snapshot --trusted-keys`` take
(:mod:`pipeline.trust.builder_key`: Ed25519 SubjectPublicKeyInfo PEM, RFC 8410): one file of PEM keys
one after another, or a directory whose ``*.pem`` files each hold one or more (default:
``~/.config/wheelproof/farm-trusted/``; set but empty: trust none). A worker signs with its own
builder key (``--builder-key``, else ``$WHEELPROOF_BUILDER_KEY``, else ``~/.config/wheelproof/builder.key``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.model.errors import WheelproofError
from pipeline.trust.builder_key import BuilderPublicKey, load_trusted_keys

__all__ = ["FARM_ENV", "TRUSTED_ENV", "DEFAULT_TRUSTED_DIR", "FarmError", "TrustedKey", "FarmSettings",
           "scheduler_address", "trusted_keys"]

FARM_ENV = "WHEELPROOF_FARM"
TRUSTED_ENV = "WHEELPROOF_FARM_TRUSTED"
DEFAULT_TRUSTED_DIR = Path("~/.config/wheelproof/farm-trusted").expanduser()


class FarmError(WheelproofError):
    """The farm cannot run a node (no scheduler, no worker for the platform, a bad setting)."""


@dataclass(frozen=True)
class TrustedKey:
    """A builder public key the coordinator trusts, and the file it was read from."""

    path: Path
    key: BuilderPublicKey

    @property
    def key_id(self) -> str:
        return self.key.key_id


@dataclass(frozen=True)
class FarmSettings:
    scheduler: str
    trusted: tuple[TrustedKey, ...]

    @property
    def requires_attestation(self) -> bool:
        """A farm that names trusted builder keys accepts only results attested by one of them."""
        return bool(self.trusted)

    @classmethod
    def from_environment(cls) -> FarmSettings | None:
        address = os.environ.get(FARM_ENV, "").strip()
        if not address:
            return None
        return cls(scheduler_address(address), _trusted_keys())


def scheduler_address(address: str) -> str:
    """``tcp://HOST:PORT`` (the only protocol a farm speaks; TLS is the deployment's, see docs/farm.md)."""
    host, sep, port = address.removeprefix("tcp://").rpartition(":")
    if not address.startswith("tcp://") or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FarmError(f"{FARM_ENV}={address!r}: expected tcp://HOST:PORT")
    return address


def trusted_keys(path: Path, source: str) -> tuple[TrustedKey, ...]:
    """The PEM builder keys in ``path``: a file of keys, or every ``*.pem`` in a directory (none is an error)."""
    files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
    if not files:
        raise FarmError(f"{path} (from {source}): no *.pem builder public key in this directory")
    keys: dict[str, TrustedKey] = {}
    for f in files:
        try:
            for key in load_trusted_keys(f):
                keys.setdefault(key.key_id, TrustedKey(f, key))
        except WheelproofError as e:
            raise FarmError(f"{f} (from {source}): {e}") from e
    return tuple(keys.values())


def _trusted_keys() -> tuple[TrustedKey, ...]:
    listed = os.environ.get(TRUSTED_ENV)
    if listed is not None:
        return trusted_keys(Path(listed).expanduser(), TRUSTED_ENV) if listed.strip() else ()
    if not DEFAULT_TRUSTED_DIR.is_dir() or not any(DEFAULT_TRUSTED_DIR.iterdir()):
        return ()  # a directory holding only something else (old minisign *.pub files) is an error, not "none"
    return trusted_keys(DEFAULT_TRUSTED_DIR, str(DEFAULT_TRUSTED_DIR))
