"""The shipped set's figures, from what is in the store (rerunnable; nothing is built unless asked):
projects, wheels, the latest snapshot's size, verdicts per wheel (identical / equivalent / differs /
not-rebuilt, and wheels whose project is not built yet), suites run and passed, and pure projects with
a test suite. With ``--cold-snapshot``, also times `doit snapshot` on a fresh, empty store (a cold
`make snapshot`: every download, build and check), which takes as long as building the whole set.

    python benchmarks/set_report.py [--cold-snapshot [--keep-store DIR]]

``--keep-store DIR`` runs the cold snapshot in DIR (absent or empty) and keeps it, so the other
figures can be read from it afterwards (``WHEELPROOF_STORE=DIR python benchmarks/set_report.py``).
The cold run passes ``--continue``: one failing suite does not cut the measurement short (it reports
FAILED, having built and tested everything else; `doit snapshot` afterwards redoes only what failed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import DOIT, REPO
from packaging.utils import parse_wheel_filename


def _pure(filename: str) -> bool:
    return all(t.abi == "none" and t.platform == "any" for t in parse_wheel_filename(filename)[3])


def report() -> None:
    from pipeline.cli import tasks
    from pipeline.export.snapshot import wheel_verdict

    decls = tasks.declarations()
    records = tasks.records()
    verdicts: Counter[str] = Counter()
    for name, d in decls.items():
        record = records.get(name)
        for w in d.wheels:
            verdicts[wheel_verdict(d, record, w)[0] if record is not None else "not built yet"] += 1
    wheels = sum(len(d.wheels) for d in decls.values())
    wheel_bytes = sum(w.size or 0 for d in decls.values() for w in d.wheels)
    pure = [n for n, d in decls.items() if all(_pure(w.filename) for w in d.wheels)]
    suites = [n for n, d in decls.items() if d.test is not None]
    results = tasks.test_results()
    passed = [n for n, r in results.items() if r.outcome in ("passed", "known-failure")]
    no_rebuild = [n for n, d in decls.items() if d.no_rebuild is not None]
    print(f"projects: {len(decls)} ({len(pure)} pure, {len(no_rebuild)} with rebuild = false)")
    print(f"wheels: {wheels} ({wheel_bytes / 1e6:,.1f} MB declared)")
    latest = tasks.latest_snapshot()
    print(f"snapshot: {latest.root} CAR {latest.car.size:,} bytes" if latest else "snapshot: none in the store yet")
    print("verdicts per wheel: " + ", ".join(f"{k} {verdicts[k]}" for k in
                                             ("identical", "equivalent", "differs", "not-rebuilt", "failed",
                                              "not built yet") if verdicts[k]))
    pure_with = len(set(pure) & set(suites))
    print(f"test suites: {len(suites)} declared ({pure_with} of {len(pure)} pure projects"
          f"{f', {100 * pure_with / len(pure):.0f}%' if pure else ''}), {len(results)} run, {len(passed)} passed")


def cold_snapshot(keep: Path | None = None) -> None:
    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise SystemExit(f"--keep-store {keep}: not empty; a cold snapshot needs an empty store")
    with tempfile.TemporaryDirectory(prefix="wheelproof-cold-") as tmp:
        env = {**os.environ, "WHEELPROOF_STORE": str(keep or Path(tmp) / "store")}
        started = time.monotonic()
        proc = subprocess.run(DOIT + ["-n", "2", "--continue", "--db-file", str(Path(tmp) / "doit.db"), "snapshot"],
                              cwd=REPO, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
    status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
    print(f"make snapshot on a cold store: {seconds:,.0f}s ({status})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold-snapshot", action="store_true", help="also time `doit snapshot` on an empty store")
    ap.add_argument("--keep-store", type=Path, help="with --cold-snapshot: use this (empty) store and keep it")
    args = ap.parse_args()
    if args.keep_store is not None and not args.cold_snapshot:
        ap.error("--keep-store needs --cold-snapshot")
    if args.cold_snapshot:
        cold_snapshot(args.keep_store)
    if args.keep_store is not None:
        os.environ["WHEELPROOF_STORE"] = str(args.keep_store)  # the figures of what the cold run made
    report()


if __name__ == "__main__":
    main()
