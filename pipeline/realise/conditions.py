"""``python -m pipeline conditions``: infer the build conditions of declared projects again, and write them.

``declare`` infers ``[build.conditions]`` when it writes a declaration; this re-infers them for
declarations already in the set (from the pinned upstream wheel and sdist, fetched and verified) and,
with ``write``, edits only that table in place (tomlkit keeps every other line and comment).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tomlkit

from pipeline.model.conditions import BuildConditions
from pipeline.model.declaration import Declaration, parse
from pipeline.model.errors import DeclarationError, Problem
from pipeline.realise.declare import set_conditions
from pipeline.realise.fetch import fetch
from pipeline.store.local import Store, atomic_write
from pipeline.wheel.conditions import infer_from_archives

__all__ = ["ConditionChange", "infer_for", "write_conditions"]


@dataclass(frozen=True)
class ConditionChange:
    name: str
    declared: BuildConditions
    inferred: BuildConditions

    @property
    def changed(self) -> bool:
        return self.declared != self.inferred  # values or evidence


def infer_for(decl: Declaration, store: Store, log: Callable[[str], None] = print) -> ConditionChange:
    """What upstream's wheel and sdist show of how the wheel was built, beside what is declared."""
    upstream = decl.wheel_for_build()
    for field, artifact in (("sdist", decl.sdist), ("wheels", upstream)):
        fetch(store, artifact, what=f"{decl.path} ({field})", log=log)
    inferred = infer_from_archives(store.verified_path(upstream.sha256), store.verified_path(decl.sdist.sha256),
                                   decl.sdist.filename, decl.build.generator)
    return ConditionChange(decl.canonical_name, decl.build.conditions, inferred)


def write_conditions(decl: Declaration, conditions: BuildConditions) -> None:
    """Replace ``[build.conditions]`` of ``decl``'s file; the result must load, or nothing is written."""
    doc = tomlkit.parse(decl.path.read_text())
    set_conditions(doc["build"], conditions)
    text = tomlkit.dumps(doc)
    problems: list[Problem] = []
    if parse(decl.path, text, problems) is None or problems:
        raise DeclarationError(problems or [Problem(decl.path, None, "build.conditions",
                                                    "the edited text does not load")])
    atomic_write(decl.path, text.encode())
