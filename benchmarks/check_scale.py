"""`doit check` at scale: generate N declarations (default 10,000) as files, then time loading them and
running every rule over the 20 supported environments, against merely parsing the same files with
`tomllib`. Times are CPU seconds of the checking process (a shared machine does not inflate them); the
first run validates every file and fills the evaluation cache, later runs load from it (as a
maintainer's repeated `doit check` does).

Each generated project depends on up to three earlier ones, some with environment markers and extras,
and every 7th ships per-platform wheels, so the tag, marker and closure rules all do real work.
Wheel contents are not read (that is cached per wheel hash in the store and measured separately).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.model.declaration import path_for  # noqa: E402

PLATFORM_WHEELS = ["cp311-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64", "cp311-abi3-manylinux_2_17_aarch64",
                   "cp311-abi3-macosx_10_9_universal2", "cp311-abi3-win_amd64"]
MARKERS = ["", "; sys_platform == 'win32'", "; python_version < '3.13'", "; extra == 'fast'"]


def _sha(text: str) -> str:
    """A distinct stand-in digest per artifact (the files are never fetched)."""
    return hashlib.sha256(text.encode()).hexdigest()


def generate(root: Path, n: int, rng: random.Random) -> None:
    for i in range(n):
        name = f"pkg{i:05d}"
        deps = []
        for j in rng.sample(range(i), min(i, rng.randint(0, 3))):
            deps.append(f"pkg{j:05d}>=1.0{rng.choice(MARKERS)}")
        tags = PLATFORM_WHEELS if i % 7 == 0 else ["py3-none-any"]
        wheels = "".join(
            f'[[wheels]]\nfilename = "{name}-1.{i}-{t}.whl"\nurl = "https://example.org/{name}-{t}.whl"\n'
            f'sha256 = "{_sha(f"{name}-{t}")}"\nsize = 100\n\n' for t in tags)
        path = path_for(name, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'schema = 1\nname = "{name}"\nversion = "1.{i}"\nrequires-python = ">=3.9"\nextras = ["fast"]\n'
            f"dependencies = {json.dumps(deps)}\n\n"
            f'[sdist]\nfilename = "{name}-1.{i}.tar.gz"\nurl = "https://example.org/{name}.tar.gz"\n'
            f'sha256 = "{_sha(name)}"\nsize = 100\n\n{wheels}'
            '[build]\nbackend = "flit_core.buildapi"\nrequires = []\nsource-date-epoch = 315532800\ninputs = []\n')


# Run in a fresh process each time, so nothing parsed by an earlier run is still in memory: only the
# evaluation cache on disk carries over, as between two real `doit check` runs.
CHECK = """
import json, sys, time
from pathlib import Path
c0 = time.process_time()
from pipeline.model import environments
from pipeline.policy.check import run_rules
from pipeline.realise.evaluation import Evaluation
envs = environments.load(Path(sys.argv[3]))
c1 = time.process_time()
decls = Evaluation(Path(sys.argv[1]), Path(sys.argv[2])).declarations()
c2 = time.process_time()
failures = run_rules(decls, envs, lambda d, w: None)
c3 = time.process_time()
print(json.dumps({"n": len(decls), "envs": len(envs), "failures": len(failures), "imports": c1 - c0,
                  "load": c2 - c1, "rules": c3 - c2}))
"""


def check_once(root: Path, store: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHECK, str(root), str(store),
                          str(REPO / "declarations" / "environments.toml")],
                         check=True, capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    return json.loads(out)


def parse_time(root: Path) -> tuple[float, float]:
    """Wall and CPU seconds to merely parse every declaration under ``root`` with ``tomllib``: the
    baseline both scale benchmarks compare with."""
    t, c = time.perf_counter(), time.process_time()
    for f in sorted(root.glob("*/*.toml")):
        tomllib.loads(f.read_text(encoding="utf-8"))
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, store = Path(tmp) / "declarations", Path(tmp) / "store"
        generate(root, args.n, random.Random(1))
        cold = check_once(root, store)  # evaluates, validates and fills the evaluation cache
        warm = [check_once(root, store) for _ in range(args.runs)]
        parse = statistics.median(parse_time(root)[1] for _ in range(args.runs))
    load = statistics.median(w["load"] for w in warm)
    rules = statistics.median(w["rules"] for w in warm)
    print(f"first check (validating every file, filling the evaluation cache): load {cold['load']:.2f}s + "
          f"rules {cold['rules']:.2f}s cpu")
    print(f"check over {warm[0]['n']} generated declarations x {warm[0]['envs']} environments: "
          f"load {load:.2f}s + rules {rules:.2f}s = {load + rules:.2f}s cpu; {warm[0]['failures']} failures; "
          f"tomllib parse {parse:.2f}s; check/parse {(load + rules) / parse:.2f}")


if __name__ == "__main__":
    main()
