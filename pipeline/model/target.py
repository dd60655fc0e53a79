"""The build target: the one platform every rebuild is for, declared, never read from the machine.

A derivation id must be the same on every honest builder, so it may not depend on the interpreter or
host that computes it. The target is declared once, in the ``[build]`` table of
``declarations/environments.toml`` (reviewed like a declaration)::

    [build]
    target = "cp311-manylinux-x86_64"   # one of the supported environments (pythons × platforms)

It may also pin ``zlib = "1.2.13"``: the zlib the build interpreter links is a hidden input (zlib-ng,
for one, does not write the same deflate stream), so a builder whose zlib is another refuses to build.

It names a supported environment (``cp<major><minor>-<platform name>``, PEP 425's interpreter tag and a
``[[platforms]]`` name) whose platform kind is ``manylinux`` (the sandbox is Linux). What may differ
between honest builders of that target (the interpreter's patch release, the kernel, the C library, the
builder's identity) is :class:`HostFacts`: recorded in the build record and the attestation, not hashed.
A builder whose interpreter is not the target's (another implementation, Python minor version or
machine) refuses to build (:meth:`BuildTarget.refusal`).

When a declarations directory has no ``environments.toml`` (a test's scratch tree), the repository's
``declarations/environments.toml`` is the file, as for ``declare``.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tomllib
import zlib
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from pipeline.model.errors import DeclarationError, Problem
from pipeline.model.locations import DECLARATIONS_DIR, REPO_DECLARATIONS_DIR

__all__ = ["BuildTarget", "HostFacts", "build_target", "host_facts", "target_file"]

_NAME = re.compile(r"^cp(3)(\d{1,2})-([a-z0-9_-]+)$")
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True)
class BuildTarget:
    """A supported environment every rebuild targets (hashed into every derivation id)."""

    name: str            # "cp311-manylinux-x86_64"
    implementation: str  # "cpython" (sys.implementation.name)
    python: str          # "3.11" (major.minor only: patch releases build the same)
    platform: str        # "manylinux-x86_64" (a [[platforms]] name)
    machine: str         # "x86_64" (platform.machine())
    system: str          # "linux" (sys.platform)
    zlib: str | None = None  # zlib.ZLIB_RUNTIME_VERSION every builder must link, when declared

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    def refusal(self, host: HostFacts) -> str | None:
        """Why this host cannot build for the target (None when it can)."""
        major_minor = ".".join(host.python.split(".")[:2])
        if (host.implementation, major_minor, host.machine, host.system) != (
                self.implementation, self.python, self.machine, self.system):
            return (f"this builder runs {host.implementation} {host.python} on {host.system} {host.machine}, "
                    f"but the declared build target is {self.name} ({self.implementation} {self.python} on "
                    f"{self.system} {self.machine}); build with that interpreter or change [build] target")
        if self.zlib is not None and host.zlib != self.zlib:
            return (f"this builder's interpreter links zlib {host.zlib or '(unknown)'}, but the declared build "
                    f"target pins zlib {self.zlib} (another zlib writes other deflate streams); build with an "
                    "interpreter linking that zlib or change [build] zlib")
        return None


@dataclass(frozen=True)
class HostFacts:
    """What may legitimately differ between honest builders of one target: recorded, never hashed."""

    implementation: str
    python: str          # full version, e.g. "3.11.7"
    system: str
    machine: str
    kernel: str          # uname -r
    libc: str
    zlib: str = ""       # zlib.ZLIB_RUNTIME_VERSION of the interpreter that builds

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def host_facts() -> HostFacts:
    return HostFacts(sys.implementation.name, platform.python_version(), sys.platform,
                     _MACHINE_ALIASES.get(platform.machine().lower(), platform.machine()), platform.release(),
                     "-".join(platform.libc_ver()), zlib.ZLIB_RUNTIME_VERSION)


def target_file(root: Path | None = None) -> Path:
    """``<declarations>/environments.toml``, else the repository's own."""
    path = (root or DECLARATIONS_DIR) / "environments.toml"
    return path if path.exists() else REPO_DECLARATIONS_DIR / "environments.toml"


def build_target(path: Path | None = None) -> BuildTarget:
    """The declared target; a missing or bad ``[build] target`` raises DeclarationError naming the field."""
    return _load(path or target_file(), _mtime(path or target_file()))


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


@cache
def _load(path: Path, _stamp: int) -> BuildTarget:
    def bad(message: str, line: int | None = None) -> DeclarationError:
        return DeclarationError([Problem(path, line, "build.target", message)])

    try:
        text = path.read_text()
        doc = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise DeclarationError([Problem(path, None, "", f"bad supported-environments file: {e}")]) from None
    line = next((i for i, ln in enumerate(text.splitlines(), 1) if ln.strip().startswith("target")), None)
    build = doc.get("build")
    name = build.get("target") if isinstance(build, dict) else None
    if not isinstance(name, str):
        raise bad('missing: add [build] target = "cp3XX-<platform>" naming the environment rebuilds target')
    m = _NAME.match(name)
    if not m:
        raise bad(f"{name!r} is not cp<major><minor>-<platform name>", line)
    python, plat = f"{m.group(1)}.{m.group(2)}", m.group(3)
    platforms = {p.get("name"): p for p in doc.get("platforms", []) if isinstance(p, dict)}
    if python not in doc.get("pythons", []):
        raise bad(f"{name!r}: Python {python} is not in pythons = {doc.get('pythons')}", line)
    if plat not in platforms:
        raise bad(f"{name!r}: no [[platforms]] entry is named {plat!r}", line)
    spec = platforms[plat]
    if spec.get("kind") != "manylinux" or not isinstance(spec.get("arch"), str):
        raise bad(f"{name!r}: rebuilds run in a Linux sandbox; the target must be a manylinux platform", line)
    arch: str = spec["arch"]
    pinned_zlib = build.get("zlib") if isinstance(build, dict) else None
    if pinned_zlib is not None and (not isinstance(pinned_zlib, str) or not re.fullmatch(r"[0-9][0-9A-Za-z.+-]{0,40}",
                                                                                          pinned_zlib)):
        raise bad(f"zlib = {pinned_zlib!r} is not a zlib version such as \"1.2.13\"")
    return BuildTarget(name, "cpython", python, plat, _MACHINE_ALIASES.get(arch, arch), "linux", pinned_zlib)
