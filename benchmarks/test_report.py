"""Test-suite report over the shipped declarations from a real run: runs `doit test` (what is not
up to date), then counts declarations with tests, outcomes and the total test count."""

from __future__ import annotations

import subprocess
from collections import Counter

from _common import DOIT, REPO


def main() -> None:
    subprocess.run(DOIT + ["-n", "2", "--continue", "test"], cwd=REPO, check=False, capture_output=True)
    from pipeline.cli import tasks
    from pipeline.realise import testing

    decls = tasks.declarations()
    with_tests = tasks.nodes("test")
    results = tasks.test_results()
    for r in results.values():
        print(testing.summary_line(r))
    outcomes = Counter(r.outcome for r in results.values())
    total = sum(r.tests for r in results.values())
    passed = sum(r.passed for r in results.values())
    print(f"\n{len(with_tests)} of {len(decls)} declarations have tests; "
          + ", ".join(f"{k}: {v}" for k, v in outcomes.most_common())
          + f"; {total} tests in all, {passed} passed")

if __name__ == "__main__":
    main()
