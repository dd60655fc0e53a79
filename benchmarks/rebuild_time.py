"""Rebuild time per package, from the timings in the current build records.

Prints one line per declaration (fetch, build, varied build, total) and the median.
Run `doit build` first; `--fresh NAME...` forces new rebuilds of those (removes their records' refs).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess

from _common import DOIT, REPO


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fresh", nargs="*", default=[])
    args = ap.parse_args()
    from pipeline.cli import tasks
    from pipeline.realise.rebuild import RECORD_KIND, derivation

    for name in args.fresh:
        ref = tasks.store().refs / RECORD_KIND / derivation(tasks.declarations()[name]).id
        ref.unlink(missing_ok=True)
    subprocess.run(DOIT + ["build"], cwd=REPO, check=False, capture_output=True)
    totals = []
    print(f"{'package':28} {'fetch':>7} {'build':>7} {'varied':>7} {'total':>7}  verdict")
    for name, r in sorted(tasks.records().items()):
        t = r.get("timings", {})
        totals.append(t.get("total", 0.0))
        print(f"{name:28} {t.get('fetch', 0):7.2f} {t.get('build', 0):7.2f} {t.get('varied_build', 0):7.2f} "
              f"{t.get('total', 0):7.2f}  {r['verdict']}")
    if totals:
        print(f"median rebuild time {statistics.median(totals):.2f}s over {len(totals)} packages, "
              f"sum {sum(totals):.1f}s")


if __name__ == "__main__":
    main()
