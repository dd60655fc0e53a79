"""`doit check` at scale: generate N declarations (default 10,000) as files, then time loading them and
running every rule over the 20 supported environments. Prints the rate in declarations per second.

Each generated project depends on up to three earlier ones, some with environment markers and extras,
and every 7th ships per-platform wheels, so the tag, marker and closure rules all do real work.
Wheel contents are not read (that is cached per wheel hash in the store and measured separately).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.model import environments  # noqa: E402
from pipeline.model.declaration import load_all, path_for  # noqa: E402
from pipeline.policy.check import run_rules  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10_000)
    args = ap.parse_args()
    envs = environments.load(REPO / "declarations" / "environments.toml")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, args.n, random.Random(1))
        t0 = time.perf_counter()
        decls = load_all(root)
        t1 = time.perf_counter()
        failures = run_rules(decls, envs, lambda d, w: None)
        t2 = time.perf_counter()
    print(f"check over {len(decls)} generated declarations x {len(envs)} environments: "
          f"load {t1 - t0:.2f}s + rules {t2 - t1:.2f}s = {t2 - t0:.2f}s "
          f"({len(decls) / (t2 - t0):,.0f} declarations/s); {len(failures)} failures")


if __name__ == "__main__":
    main()
