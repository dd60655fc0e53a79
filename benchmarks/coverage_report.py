"""Write docs/coverage.md: every top-N project (../shared/data/top-pypi.tsv, or --top-file) that is
not in the set, and why, the reasons taken from the output of `declare --with-deps` runs (--log FILE,
repeatable): `NAME: not declared: REASON`, `NAME: removed again: REASON`, `NAME: left out: REASON`.
A project no log mentions was not reached by the closure walks that were run.

    python benchmarks/coverage_report.py --log declare.log [--top 300] [--output docs/coverage.md]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from _common import REPO
from packaging.utils import canonicalize_name

_REASON = re.compile(r"^(?:\[\d+/\d+\] )?(?P<name>[a-z0-9][a-z0-9._-]*): (?:not declared|removed again|left out): ?"
                     r"(?P<why>.*)$")
_LEFT_OUT = re.compile(r"^(?:\[\d+/\d+\] )?(?P<name>[a-z0-9][a-z0-9._-]*): (?P<why>left out: .*)$")


def reasons(logs: list[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            m = _LEFT_OUT.match(line) or _REASON.match(line)
            if m:
                out[canonicalize_name(m.group("name"))] = m.group("why").strip()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top-file", default=str(REPO.parent / "shared" / "data" / "top-pypi.tsv"))
    ap.add_argument("--top", type=int, default=300)
    ap.add_argument("--log", action="append", default=[], help="output of a `declare --with-deps` run")
    ap.add_argument("--output", default=str(REPO / "docs" / "coverage.md"))
    args = ap.parse_args()
    from pipeline.cli import tasks

    decls = tasks.declarations()
    rows = [line.split("\t") for line in Path(args.top_file).read_text().splitlines()[1:] if "\t" in line]
    top = [(int(rank), canonicalize_name(name)) for rank, name in rows][: args.top]
    why = reasons([Path(p) for p in args.log])
    missing = [(rank, name) for rank, name in top if name not in decls]
    lines = [
        "# Coverage of the most-installed projects",
        "",
        f"Written by `python benchmarks/coverage_report.py` from `top-pypi.tsv` (the {args.top} most-downloaded",
        "projects) and the output of the `declare --with-deps` runs that grew the set. \"could not be declared\"",
        "includes projects the walk had queued but not reached when it was stopped.",
        "",
        f"{len(top) - len(missing)} of the top {len(top)} projects are in the set ({len(decls)} projects in all); "
        f"{len(missing)} are not:",
        "",
        "| rank | project | why not in the set |",
        "|---:|---|---|",
    ]
    for rank, name in missing:
        reason = why.get(name, "not reached yet: the closure walk that grows the set was stopped at the time box")
        lines.append(f"| {rank} | {name} | {reason.replace('|', '/')} |")
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"{args.output}: {len(top) - len(missing)} of the top {len(top)} in the set, {len(missing)} listed")


if __name__ == "__main__":
    main()
