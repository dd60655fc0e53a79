"""Supported environments: (CPython version × platform), each a PEP 508 marker environment plus the
ordered list of wheel tags it accepts (PEP 425, PEP 600 manylinux, macOS universal2 and version ranges),
all computed by ``packaging.tags``.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging import tags as wheel_tags
from packaging.specifiers import SpecifierSet

from pipeline.model.declaration import DECLARATIONS_DIR, Declaration, Deselection
from pipeline.model.errors import DeclarationError, Problem

__all__ = ["ENVIRONMENTS_FILE", "Environment", "admits", "expand", "left_out", "load", "platform_tags",
           "unavailable"]

ENVIRONMENTS_FILE = DECLARATIONS_DIR / "environments.toml"
# PEP 600: the legacy manylinux names are aliases of these glibc versions.
_LEGACY_MANYLINUX = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
_MARKER_PLATFORM = {
    "manylinux": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"},
    "macos": {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix"},
    "windows": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"},
}
_MACHINE = {("macos", "arm64"): "arm64", ("windows", "amd64"): "AMD64"}


@dataclass(frozen=True, eq=False)
class Environment:
    name: str                    # e.g. "cp311-manylinux-x86_64"
    python: str                  # "3.11"
    platform: str                # "manylinux-x86_64"
    markers: dict[str, str]      # PEP 508 marker environment (without "extra")
    tags: tuple[wheel_tags.Tag, ...]   # most preferred first
    tag_set: frozenset[wheel_tags.Tag] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tag_set", frozenset(self.tags))


def platform_tags(kind: str, arch: str, spec: dict[str, str]) -> list[str]:
    if kind == "manylinux":
        major, minor = (int(x) for x in spec["glibc"].split("."))
        out = []
        for m in range(minor, 4, -1):  # newest glibc first, down to 2.5 (manylinux1)
            out.append(f"manylinux_{major}_{m}_{arch}")
            if (major, m) in _LEGACY_MANYLINUX and arch in ("x86_64", "i686", "aarch64", "ppc64le", "s390x"):
                legacy = _LEGACY_MANYLINUX[(major, m)]
                if legacy == "manylinux2014" or arch in ("x86_64", "i686"):
                    out.append(f"{legacy}_{arch}")
        return out + [f"linux_{arch}"]
    if kind == "macos":
        version = tuple(int(x) for x in spec["macos"].split("."))
        return list(wheel_tags.mac_platforms((version[0], version[1] if len(version) > 1 else 0), arch))
    if kind == "windows":
        return [f"win_{arch}"]
    raise ValueError(f"unknown platform kind {kind!r}")


def expand(python: str, platform: dict[str, str]) -> Environment:
    major, minor = (int(x) for x in python.split("."))
    kind, arch = platform["kind"], platform["arch"]
    plats = platform_tags(kind, arch, platform)
    interpreter = f"cp{major}{minor}"
    ordered = list(wheel_tags.cpython_tags((major, minor), abis=[interpreter], platforms=plats))
    ordered += list(wheel_tags.compatible_tags((major, minor), interpreter, plats))
    markers = {
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "platform_python_implementation": "CPython",
        "python_version": python,
        "python_full_version": f"{python}.0",
        "platform_machine": _MACHINE.get((kind, arch), arch),
        "platform_release": "",
        "platform_version": "",
        **_MARKER_PLATFORM[kind],
    }
    return Environment(f"{interpreter}-{platform['name']}", python, platform["name"], markers, tuple(ordered))


@cache
def load(path: Path = ENVIRONMENTS_FILE) -> tuple[Environment, ...]:
    try:
        doc = tomllib.loads(path.read_text())
        return tuple(expand(py, plat) for py in doc["pythons"] for plat in doc["platforms"])
    except (OSError, tomllib.TOMLDecodeError, KeyError, ValueError) as e:
        raise DeclarationError([Problem(path, None, "", f"bad supported-environments file: {e}")]) from None


def admits(requires_python: str | None, env: Environment) -> bool:
    """Whether a project's ``Requires-Python`` (PEP 440 specifier set) admits the environment's CPython."""
    return requires_python is None or _admits(requires_python, env.python)


def left_out(unsupported: Iterable[Deselection], env: Environment) -> str | None:
    """The reason of the first ``[[unsupported]]`` entry whose target (environment or platform glob) matches."""
    for u in unsupported:
        if fnmatch.fnmatchcase(env.name, u.target) or fnmatch.fnmatchcase(env.platform, u.target):
            return u.reason
    return None


def unavailable(decl: Declaration, env: Environment) -> str | None:
    """Why ``decl``'s project is not installed in ``env`` (an ``[[unsupported]]`` reason or its
    ``requires-python``), or None when it is."""
    if (why := left_out(decl.unsupported, env)) is not None:
        return why
    if not admits(decl.requires_python, env):
        return f"requires-python {decl.requires_python}"
    return None


@cache
def _admits(requires_python: str, python: str) -> bool:
    return SpecifierSet(requires_python).contains(python, prereleases=True)
