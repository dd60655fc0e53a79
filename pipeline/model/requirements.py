"""PEP 508 requirements, parsed once per text and remembered across runs.

``check`` looks at every dependency of every declaration in every supported environment; parsing
10,000 declarations' requirements with ``packaging`` costs more than the rules themselves. A
:class:`Req` is the few fields the rules need, as plain strings, so the evaluation cache
(:mod:`pipeline.realise.evaluation`) can keep them beside the parsed declarations and hand them back
with :func:`remember` instead of having them parsed again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

__all__ = ["Req", "parse_requirement", "remember", "known", "satisfied_by"]


@dataclass(frozen=True, slots=True)
class Req:
    """A PEP 508 requirement as the rules use it (valid: declarations are validated first)."""

    text: str
    name: str                 # as written
    canonical: str            # PEP 503 normalised
    specifier: str            # "" for any version
    extras: tuple[str, ...]   # PEP 685 normalised, sorted
    marker: str | None        # the marker's normalised text, None without one


_KNOWN: dict[str, Req] = {}


def parse_requirement(text: str) -> Req:
    req = _KNOWN.get(text)
    if req is None:
        r = Requirement(text)
        req = Req(text, r.name, canonicalize_name(r.name), str(r.specifier),
                  tuple(sorted(canonicalize_name(e) for e in r.extras)),
                  None if r.marker is None else str(r.marker))
        _KNOWN[text] = req
    return req


def remember(reqs: Iterable[Req]) -> None:
    """Take requirements parsed by an earlier run (the evaluation cache)."""
    _KNOWN.update((r.text, r) for r in reqs)


def known() -> list[Req]:
    """Every requirement parsed so far in this process."""
    return list(_KNOWN.values())


@lru_cache(maxsize=1 << 16)
def satisfied_by(specifier: str, version: str) -> bool:
    """PEP 440 as an installer applies it: pre-releases match only when nothing else does."""
    return bool(list(SpecifierSet(specifier).filter([Version(version)])))
