"""Farm settings: where the scheduler is, which builder keys the coordinator trusts, this worker's key.

``WHEELPROOF_FARM=tcp://HOST:PORT`` turns the farm on for ``doit build``/``test``/``snapshot``.
``WHEELPROOF_FARM_TRUSTED`` lists the builder public keys (minisign format, as ``python -m pipeline
keygen`` writes them) whose attestations the coordinator accepts, separated by ``os.pathsep``
(default: every ``*.pub`` in ``~/.config/wheelproof/farm-trusted/``). A worker signs with its own
builder key: ``--builder-key``, else ``$WHEELPROOF_BUILDER_KEY``, else ``~/.config/wheelproof/builder.key``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.model.errors import WheelproofError
from pipeline.trust.signing import PublicKey, SecretKey, SignatureError

__all__ = ["FARM_ENV", "TRUSTED_ENV", "BUILDER_KEY_ENV", "DEFAULT_TRUSTED_DIR", "DEFAULT_BUILDER_KEY",
           "FarmError", "TrustedKey", "FarmSettings", "load_builder_key", "scheduler_address"]

FARM_ENV = "WHEELPROOF_FARM"
TRUSTED_ENV = "WHEELPROOF_FARM_TRUSTED"
BUILDER_KEY_ENV = "WHEELPROOF_BUILDER_KEY"
DEFAULT_TRUSTED_DIR = Path("~/.config/wheelproof/farm-trusted").expanduser()
DEFAULT_BUILDER_KEY = Path("~/.config/wheelproof/builder.key").expanduser()


class FarmError(WheelproofError):
    """The farm cannot run a node (no scheduler, no worker for the platform, a bad setting)."""


@dataclass(frozen=True)
class TrustedKey:
    path: Path
    key: PublicKey

    @property
    def key_id(self) -> str:
        return self.key.key_id_hex


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


def _trusted_keys() -> tuple[TrustedKey, ...]:
    listed = os.environ.get(TRUSTED_ENV)
    if listed is not None:
        paths = [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    else:
        paths = sorted(DEFAULT_TRUSTED_DIR.glob("*.pub")) if DEFAULT_TRUSTED_DIR.is_dir() else []
    keys = []
    for path in paths:
        try:
            keys.append(TrustedKey(path, PublicKey.parse(path.read_text())))
        except (OSError, SignatureError) as e:
            source = TRUSTED_ENV if listed is not None else str(DEFAULT_TRUSTED_DIR)
            raise FarmError(f"{path} (from {source}): not a builder public key: {e}") from e
    return tuple(keys)


def load_builder_key(path: Path | None = None) -> tuple[Path, SecretKey]:
    """This worker's builder key (its identity on the farm)."""
    path = Path(path or os.environ.get(BUILDER_KEY_ENV) or DEFAULT_BUILDER_KEY).expanduser()
    try:
        return path, SecretKey.parse(path.read_text())
    except FileNotFoundError:
        raise FarmError(f"no builder key at {path}: create one with `python -m pipeline keygen --secret {path} "
                        f"--public {path.with_suffix('.pub')}` (or set {BUILDER_KEY_ENV})") from None
    except (OSError, SignatureError) as e:
        raise FarmError(f"{path}: not a builder secret key: {e}") from e
