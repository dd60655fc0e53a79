"""Run a package's own test suite against its installed wheel; runs *inside* the sandbox, offline.

    /inputs/wheels/*.whl     the wheel we publish, its runtime closure and the test requirements
    /inputs/source/<archive> the sdist (or a declared, hash-pinned test source)

Phase ``prepare`` makes /env from the wheels alone and extracts the source to /extract. Phase ``run``
(env read-only) first proves that the package's top-level modules import from /env, not from the
source tree, then runs the command (pytest by default, with --import-mode=importlib and ``python -P``
so the current directory is never on sys.path), and writes /out/run.json with the counts from
pytest's JUnit XML (or unittest's summary line).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_wheel import MAX_EXTRACT, MAX_RATIO, IsolatedEnv, extract_sdist  # noqa: E402  (the same env and unpacking as builds)


def top_level_modules(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        tops = set()
        for name in zf.namelist():
            first = name.split("/")[0]
            if first.endswith((".dist-info", ".data")) or first.endswith(".pth"):
                continue
            tops.add(first[:-3] if first.endswith(".py") else first.split(".")[0])
    return sorted(t for t in tops if t.isidentifier())


def junit_counts(path: Path) -> dict[str, float]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: 0.0 for k in ("tests", "failures", "errors", "skipped", "time")}
    for s in suites:
        for k in total:
            total[k] += float(s.get(k, 0) or 0)
    return total


UNITTEST_FAILURE = re.compile(r"^(?:FAIL|ERROR): \S+ \(([^)]+)\)")
# ECMA-48 SGR sequences: a project's config may force colour (`addopts = "--color=yes"`, FORCE_COLOR).
COLOUR = re.compile(r"\x1b\[[0-9;]*m")
SUMMARY = "short test summary info"


def failed_ids(output: str, pytest: bool) -> list[str]:
    """Failing test ids: pytest's short summary (``-rfE``: ``FAILED id - message``, ``ERROR id``), or
    unittest's ``FAIL: test_x (package.module.Class.test_x)`` headings (the dotted name).

    Only the last pytest summary counts: a suite that tests pytest plugins runs pytest inside its tests
    (pytester), and their summaries are printed earlier, inside the outer run's failure reports."""
    text = COLOUR.sub("", output)
    ids = set()
    if pytest:
        start = text.rfind(SUMMARY)
        for line in text[start:].splitlines() if start >= 0 else ():
            for kind in ("FAILED ", "ERROR "):
                if line.startswith(kind):
                    ids.add(line[len(kind):].split(" - ", 1)[0].strip())
    else:
        ids = {m.group(1) for line in text.splitlines() if (m := UNITTEST_FAILURE.match(line))}
    return sorted(ids)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["prepare", "run"])
    ap.add_argument("--inputs", default="/inputs")
    ap.add_argument("--env", default="/env")
    ap.add_argument("--extract", default="/extract")
    ap.add_argument("--srcdir")
    ap.add_argument("--out", default="/out")
    ap.add_argument("--wheel", help="filename of the wheel under test")
    ap.add_argument("--spec", help="JSON: command, deselect, ignore")
    ap.add_argument("--max-extract", type=int, default=MAX_EXTRACT, help="prepare: bytes the source may unpack to")
    ap.add_argument("--max-ratio", type=int, default=MAX_RATIO, help="prepare: unpacked/archive size ratio")
    args = ap.parse_args(argv)
    inputs, out = Path(args.inputs), Path(args.out)
    result: dict[str, object] = {"phase": args.phase}
    if args.phase == "prepare":
        IsolatedEnv.create(Path(args.env), sorted((inputs / "wheels").glob("*.whl")))
        (source,) = sorted((inputs / "source").iterdir())
        result["top"] = extract_sdist(source, Path(args.extract), args.max_extract, args.max_ratio).name
    else:
        env = IsolatedEnv(Path(args.env))
        spec = json.loads(args.spec)
        modules = top_level_modules(inputs / "wheels" / args.wheel)
        # A namespace package (PEP 420: google, azure, jaraco, sphinxcontrib...) has no origin; where it
        # comes from is its search path, and every entry of that must be in /env too.
        probe = ("import importlib.util, json, sys\n"
                 "def where(m):\n"
                 "    s = importlib.util.find_spec(m)\n"
                 "    if s is None or s.origin:\n"
                 "        return getattr(s, 'origin', None)\n"
                 "    paths = list(s.submodule_search_locations or [])\n"
                 "    outside = [p for p in paths if not p.startswith(sys.argv[1] + '/')]\n"
                 "    return (outside or paths or [None])[0]\n"
                 "print(json.dumps({m: where(m) for m in sys.argv[2:]}))")
        origins = json.loads(subprocess.run([env.python, "-P", "-c", probe, str(env.path), *modules],
                                            cwd=args.srcdir, capture_output=True, text=True, check=True).stdout)
        result["imports"] = origins
        outside = {m: o for m, o in origins.items() if not (o or "").startswith(str(env.path) + "/")}
        if outside:
            print(f"wheelproof: these modules would not come from the installed wheel: {outside}", flush=True)
            (out / "run.json").write_text(json.dumps(result | {"status": "error"}))
            return 3
        command = spec["command"] or ["python", "-m", "pytest"]
        if command[0] == "python":
            command = [env.python, "-P", *command[1:]]
        is_pytest = command[-1] == "pytest" or "pytest" in command[1:4]
        if is_pytest:
            command += ["-p", "no:cacheprovider", "--import-mode=importlib", "-rfE", "--color=no",
                        f"--junitxml={out / 'junit.xml'}"]
            command += [f"--deselect={d}" for d in spec["deselect"]] + [f"--ignore={i}" for i in spec["ignore"]]
        os.environ["PATH"] = f"{env.scripts}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
        print("wheelproof: " + " ".join(command), flush=True)
        started = time.monotonic()
        proc = subprocess.run(command, cwd=args.srcdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(proc.stdout, flush=True)
        result["exit_status"] = proc.returncode
        result["seconds"] = round(time.monotonic() - started, 3)
        if is_pytest and (out / "junit.xml").is_file():
            result["counts"] = junit_counts(out / "junit.xml")
            result["failed_ids"] = failed_ids(proc.stdout, pytest=True)
        elif m := re.search(r"^Ran (\d+) tests? in ([\d.]+)s", proc.stdout, re.M):
            tail = proc.stdout[m.end():]
            result["counts"] = {"tests": float(m.group(1)), "time": float(m.group(2)), **{
                k: float(x.group(1)) if (x := re.search(rf"{key}=(\d+)", tail)) else 0.0
                for k, key in (("failures", "failures"), ("errors", "errors"), ("skipped", "skipped"))}}
            result["failed_ids"] = failed_ids(proc.stdout, pytest=False)
    (out / f"{args.phase}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
