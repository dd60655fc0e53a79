"""``python -m pipeline log NAME [--test] [--diff]``: the stored log of a declaration's current build
(or test run), and the comparison's diff against upstream.

The log is the sandbox's output, so it is hostile: it is printed with every control character other
than newline and tab shown as an escape (``\\x1b``), never interpreted by the terminal (ANSI escapes,
carriage returns that overwrite a line, bidirectional overrides).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.model.declaration import Declaration
from pipeline.model.errors import WheelproofError
from pipeline.realise.rebuild import derivation, load_record
from pipeline.store.local import Store

__all__ = ["LogView", "pointer", "printable", "view"]

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control characters (C0 but newline and tab, DEL, C1, bidi controls) escaped."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def pointer(name: str, test: bool = False) -> str:
    """The line a failure ends with: where its full log is."""
    return f"full log: python -m pipeline log {name}{' --test' if test else ''}"


@dataclass(frozen=True)
class LogView:
    title: str   # e.g. "build log of six 1.17.0 (drv 0123456789ab): identical"
    text: str    # printable


def view(store: Store, decl: Declaration, decls: Mapping[str, Declaration], test: bool = False,
         diff: bool = False) -> LogView:
    """The log (or, with ``diff``, the comparison) of ``decl``'s current derivation or test plan."""
    name = decl.canonical_name
    if test:
        from pipeline.realise import testing

        if decl.test is None:
            raise WheelproofError(f"{decl.path}: {name} has no [test] table, so no test log")
        p = testing.plan(decl, decls)
        trecord = testing.load_result(store, p)
        if trecord is None:
            raise WheelproofError(f"{name} {decl.version}: its current tests (test id {p.id[:12]}) have not run; "
                                  f"run `doit test:{name}`")
        body = store.read_compressed(trecord.log.sha256).decode("utf-8", "replace")
        return LogView(f"test log of {name} {decl.version} (test id {p.id[:12]}): {trecord.outcome}", printable(body))
    drv = derivation(decl)
    record = load_record(store, drv.id)
    if record is None:
        raise WheelproofError(f"{name} {decl.version}: its current derivation ({drv.id[:12]}) has not been built; "
                              f"run `doit build:{name}`")
    title = f"{name} {decl.version} (drv {drv.id[:12]}): {record.verdict}"
    if diff:
        comparison = dict(record.comparison or {})
        if not comparison:
            return LogView(f"comparison of {title}", f"no comparison: {record.summary or record.verdict}\n")
        lines = [f"{record.summary or record.verdict}\n"]
        declared = decl.build.conditions
        for key, text in declared.evidence:
            lines.append(f"condition {key} = {declared.declared()[key]}: {text}\n")
        for key, label in (("only_upstream", "only upstream"), ("only_rebuild", "only in our rebuild"),
                           ("content_differs", "other contents"), ("executable_differs", "executable bit differs"),
                           ("header_problems", "local header vs central directory")):
            values = comparison.get(key) or []
            if values:
                lines.append(f"{label}: {', '.join(str(v) for v in values)}\n")
        for zip_field, members in dict(comparison.get("zip_metadata_differs") or {}).items():
            lines.append(f"zip {zip_field} differs: {', '.join(str(m) for m in members)}\n")
        lines.append(str(comparison.get("diff") or ""))
        return LogView(f"comparison of {title} with upstream {record.upstream.filename}", printable("".join(lines)))
    body = store.read_compressed(record.log.sha256).decode("utf-8", "replace")
    return LogView(f"build log of {title}", printable(body))
