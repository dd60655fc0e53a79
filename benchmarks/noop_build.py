"""Per-declaration cost of a no-op `doit build` over all declarations (everything already built).

Prints seconds per declaration (median of several runs) and the fixed start-up cost.
"""

from __future__ import annotations

import statistics
import subprocess
import time

from _common import DOIT, REPO


def run(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(DOIT + args, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    from pipeline.cli.tasks import declarations

    n = len(declarations())
    subprocess.run(DOIT + ["build"], cwd=REPO, check=True, capture_output=True)  # make sure all are built
    full = statistics.median(run(["build"]) for _ in range(5))
    startup = statistics.median(run(["list"]) for _ in range(5))
    print(f"no-op doit build over {n} declarations: {full:.3f}s total, "
          f"{(full - startup) / n * 1000:.2f} ms per declaration beyond {startup:.3f}s of start-up "
          f"(doit list); {full / n * 1000:.1f} ms per declaration all in")


if __name__ == "__main__":
    main()
