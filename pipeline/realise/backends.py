"""Build backends and build requirements the sandbox cannot run, found before anything is built.

The sandbox (pipeline/realise/sandbox.py) sees the host's ``/usr`` read-only and nothing else of the
host: a compiler or tool outside ``/usr`` (a Rust toolchain under ``~/.cargo``, say) is not there, and
the sandbox has no network to download one. ``declare`` warns at once, naming the requirement
(PEP 517 ``build-backend``, PEP 518 ``requires``), instead of letting the build fail later as a
network violation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["NEEDS", "Need", "sandbox_cannot_run"]


@dataclass(frozen=True)
class Need:
    """A tool a build requirement needs from the system, and the commands that provide it."""

    what: str                   # e.g. "a Rust toolchain (cargo, rustc)"
    commands: tuple[str, ...]   # all must be under /usr/bin for the sandbox to have them


RUST = Need("a Rust toolchain (cargo, rustc)", ("cargo", "rustc"))
C = Need("a C compiler (cc)", ("cc",))
NEEDS: dict[str, Need] = {
    "maturin": RUST,
    "setuptools-rust": RUST,
    "puccinialin": RUST,
    "cython": C,
    "scikit-build": C,
    "scikit-build-core": C,
    "meson-python": C,
    "pybind11": C,
    "nanobind": C,
    "cffi": C,
}
_BACKEND_PROJECT = {"maturin": "maturin", "mesonpy": "meson-python", "scikit_build_core.build": "scikit-build-core"}
SANDBOX_BIN = "/usr/bin"


def sandbox_cannot_run(backend: str, requires: Sequence[str], sandbox_bin: str = SANDBOX_BIN) -> list[str]:
    """One warning per build requirement that needs a tool missing from the sandbox's ``/usr/bin``."""
    names: set[str] = set()
    for r in requires:
        try:
            names.add(canonicalize_name(Requirement(r).name))
        except InvalidRequirement:
            continue
    if backend in _BACKEND_PROJECT:
        names.add(_BACKEND_PROJECT[backend])
    out = []
    for n in sorted(names):
        need = NEEDS.get(n)
        if need is None:
            continue
        missing = [c for c in need.commands if not os.access(os.path.join(sandbox_bin, c), os.X_OK)]
        if missing:
            out.append(f"build requirement {n} needs {need.what}, and the sandbox has no {', '.join(missing)} "
                       f"in {sandbox_bin}: the rebuild will fail; declare `rebuild = false` with a reason")
    return out
