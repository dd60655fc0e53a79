"""A derivation: everything a build's output may depend on, hashed into one id.

The id covers the sdist and every input wheel (by SHA-256, not URL: a mirror
does not change a build), the frontend tools, the builder programs, the
declared backend, environment overrides and SOURCE_DATE_EPOCH, the upstream
wheel the output is compared with, the declared build target
(:mod:`pipeline.model.target`), and the sandbox: its mode, the digest of its
specification (bubblewrap's isolation, the made-up /etc, the fixed build path
and environment) and the declaration's :class:`~pipeline.model.limits.Limits`.

Nothing of the machine computing the id enters it, so every honest builder of
one declaration and target computes the same id (the basis of comparing
builders, docs/challenge.md); what may differ between them (kernel, patch
release of the interpreter, builder identity) is recorded in the build record
and the attestation instead. doit treats a build as up to date exactly when a
record for its id is in the store, so a store shared by a farm shares
up-to-dateness too.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.model.locations import BUILDERS_DIR
from pipeline.model.target import BuildTarget

if TYPE_CHECKING:
    from pipeline.model.declaration import Artifact, Declaration

__all__ = ["Derivation", "SandboxSpec", "build_platform", "builder_digest", "canonical_json", "toolchain"]


@cache
def builder_digest(root: Path = BUILDERS_DIR) -> str:
    """SHA-256 over the builder programs and toolchain pins (names and contents)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@cache
def toolchain(root: Path = BUILDERS_DIR) -> tuple[Artifact, ...]:
    """The builder's pinned tools; a problem in the file raises DeclarationError (exit 2)."""
    from pipeline.model.declaration import parse_toolchain

    return parse_toolchain(root / "toolchain.toml")


@cache
def build_platform() -> dict[str, str]:
    """This interpreter and machine (for caches local to one machine; never a derivation input)."""
    return {
        "implementation": sys.implementation.name,
        "python": platform.python_version(),
        "platform": sysconfig.get_platform(),
        "machine": platform.machine(),
        "libc": "-".join(platform.libc_ver()),
    }


def canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class SandboxSpec:
    """The sandbox a derivation is built in: its mode and the SHA-256 of its specification."""

    mode: str    # "bubblewrap" or "none (explicit opt-out)"
    digest: str  # realise.sandbox / realise.rebuild: sha256 of the canonical specification


@dataclass(frozen=True)
class Derivation:
    decl: Declaration
    sandbox_spec: SandboxSpec
    target: BuildTarget

    @property
    def sandbox(self) -> str:
        return self.sandbox_spec.mode

    def description(self) -> dict[str, Any]:
        b = self.decl.build
        upstream = self.decl.wheel_for_build()
        return {
            "schema": 3,
            "name": self.decl.canonical_name,
            "version": self.decl.version,
            "sdist": {"filename": self.decl.sdist.filename, "sha256": self.decl.sdist.sha256},
            "inputs": sorted(({"filename": a.filename, "sha256": a.sha256} for a in b.all_inputs),
                             key=lambda d: d["filename"]),
            "tools": [{"filename": a.filename, "sha256": a.sha256} for a in toolchain()],
            "builder": builder_digest(),
            "backend": b.backend,
            "backend_path": list(b.backend_path),
            "environment": {e.name: e.value for e in b.environment},
            "source_date_epoch": b.source_date_epoch,
            "compare_with": {"filename": upstream.filename, "sha256": upstream.sha256},
            "target": self.target.to_json(),
            "sandbox": {"mode": self.sandbox_spec.mode, "spec": self.sandbox_spec.digest},
            "limits": b.limits.to_json(),
            "conditions": b.conditions.declared(),
        }

    @property
    def id(self) -> str:
        return hashlib.sha256(canonical_json(self.with_config_settings(self.description()))).hexdigest()

    def with_config_settings(self, description: dict[str, Any]) -> dict[str, Any]:
        """The description plus PEP 517 ``config_settings`` when the declaration passes any (only then,
        so the ids of derivations without them are unchanged)."""
        settings = self.decl.build.config_settings_json()
        return {**description, "config_settings": settings} if settings else description
