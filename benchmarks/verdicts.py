"""Verdict counts over the shipped declarations, from a real run: builds what is not built yet.

Prints a Markdown table (for the README) and the counts.
"""

from __future__ import annotations

import subprocess
from collections import Counter

from _common import DOIT, REPO


def main() -> None:
    subprocess.run(DOIT + ["build"], cwd=REPO, check=False)
    from pipeline.cli import tasks
    from pipeline.realise.rebuild import verdict_line

    recs = tasks.records()
    counts = Counter(r.verdict for r in recs.values())
    deterministic = sum(1 for r in recs.values() if (r.determinism or {}).get("deterministic", True)
                        and r.succeeded)
    print("| project | version | backend | verdict |")
    print("|---|---|---|---|")
    for name, r in recs.items():
        print(f"| {name} | {r.version} | `{r.derivation['backend']}` | {r.verdict} |")
    print()
    for r in recs.values():
        print(verdict_line(r))
    print()
    print(", ".join(f"{k}: {v}" for k, v in counts.most_common()) +
          f" (of {len(tasks.declarations())} declarations; our own build deterministic for "
          f"{deterministic} of {len(recs)})")


if __name__ == "__main__":
    main()
