"""Bit-for-bit rate over the rebuilt pure wheels of the shipped set, per backend, before and after the
declared build conditions (issue 14). Rerunnable: builds what is not built yet.

"After" is each declaration as shipped; "before" is the same declaration with ``[build.conditions]``
removed (SOURCE_DATE_EPOCH set, TZ=UTC, umask 022, the real clock): another derivation, built here too.
Prints a table per backend family (from the upstream wheel's ``Generator``) and what is not identical
with its verdict, for docs/reproducibility.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from dataclasses import replace

from _common import DOIT, REPO

FAMILIES = (("setuptools", "setuptools"), ("bdist_wheel", "setuptools"), ("flit", "flit-core"),
            ("hatchling", "hatchling"), ("poetry", "poetry-core"), ("pdm", "pdm-backend"))
VERDICTS = ("identical", "equivalent", "differs")


def family(generator: str | None) -> str:
    text = (generator or "").lower()
    return next((f for prefix, f in FAMILIES if text.startswith(prefix)), text.split(" ")[0] or "unknown")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-before", action="store_true", help="skip building the before-conditions derivations")
    args = ap.parse_args()
    subprocess.run(DOIT + ["build"], cwd=REPO, check=False)
    from packaging.utils import parse_wheel_filename

    from pipeline.cli import tasks
    from pipeline.model.conditions import BuildConditions
    from pipeline.realise.rebuild import build, derivation, load_record

    store = tasks.store()
    after = tasks.records()
    rows: dict[str, dict[str, Counter[str]]] = {}
    not_identical = []
    for name, decl in sorted(tasks.declarations().items()):
        tags = parse_wheel_filename(decl.wheel_for_build().filename)[3]
        if decl.no_rebuild is not None or any(t.abi != "none" or t.platform != "any" for t in tags):
            continue  # only rebuilt pure wheels
        row = rows.setdefault(family(decl.build.generator), {"before": Counter(), "after": Counter()})
        record = after[name]
        row["after"][record.verdict] += 1
        if record.verdict != "identical":
            not_identical.append(f"{name} {decl.version} ({family(decl.build.generator)}): {record.summary}")
        if args.no_before:
            continue
        plain = replace(decl, build=replace(decl.build, conditions=BuildConditions()))
        before = load_record(store, derivation(plain).id)
        if before is None or not before.succeeded:
            print(f"building {name} {decl.version} without its conditions", file=sys.stderr, flush=True)
            before = build(plain, store, log=lambda line: None)
        row["before"][before.verdict] += 1

    def cells(c: Counter[str]) -> str:
        total = sum(c.values())
        share = f"{100 * c['identical'] / total:.0f}%" if total else "-"
        return f"{c['identical']:>4} {c['equivalent']:>4} {c['differs']:>4}  {share:>4}"

    print(f"{'backend':<16} {'wheels':>6}   before: id  eqv  dif  rate   after: id  eqv  dif  rate")
    total = {"before": Counter[str](), "after": Counter[str]()}
    for fam, row in sorted(rows.items(), key=lambda kv: -sum(kv[1]["after"].values())):
        n = sum(row["after"].values())
        print(f"{fam:<16} {n:>6}   {'':>7}{cells(row['before'])}   {'':>6}{cells(row['after'])}")
        for when in total:
            total[when].update(row[when])
    n = sum(total["after"].values())
    print(f"{'all':<16} {n:>6}   {'':>7}{cells(total['before'])}   {'':>6}{cells(total['after'])}")
    print()
    for line in not_identical:
        print(f"not identical: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
