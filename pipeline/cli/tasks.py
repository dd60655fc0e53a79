"""What dodo.py's tasks call: thin wrappers joining declarations, store and steps."""

from __future__ import annotations

import sys
from collections import Counter
from functools import cache

from pipeline.export import snapshot as snapshots
from pipeline.model import environments
from pipeline.model.declaration import DECLARATIONS_DIR, Artifact, Declaration, load_all
from pipeline.model.derivation import toolchain
from pipeline.model.errors import DeclarationError, WheelproofError
from pipeline.policy.check import report, run_rules
from pipeline.realise import testing
from pipeline.realise.fetch import fetch
from pipeline.realise.rebuild import build, derivation, is_built, load_record, verdict_line
from pipeline.store.local import Store
from pipeline.wheel.facts import WheelFacts, facts_for


@cache
def store() -> Store:
    return Store()


@cache
def declarations() -> dict[str, Declaration]:
    """Every declaration; on any problem, print them all and exit 2 (nothing is built or written)."""
    try:
        return dict(sorted(load_all(DECLARATIONS_DIR).items()))
    except DeclarationError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        print(f"{len(e.problems)} problem(s) in declarations; nothing was built", file=sys.stderr)
        raise SystemExit(2) from None


def build_uptodate(name: str) -> bool:
    return is_built(store(), declarations()[name])


def build_one(name: str) -> bool:
    names = list(declarations())
    decl = declarations()[name]
    position = f"[{names.index(name) + 1}/{len(names)}]"
    print(f"{position} build:{name} {decl.version} (drv {derivation(decl).id[:12]})", flush=True)
    try:
        record = build(decl, store(), log=lambda m: print(f"  {m}", flush=True))
    except WheelproofError as e:
        print(f"{position} build:{name}: error: {e}", file=sys.stderr)
        return False
    print(f"{position} build:{verdict_line(record)}", flush=True)
    if record["verdict"] == "failed":
        print(record.get("log_tail", ""), file=sys.stderr)
        return False
    return True


def records() -> dict[str, dict]:
    """The build record of each declaration's current derivation (absent if never built)."""
    out = {}
    for name, decl in declarations().items():
        record = load_record(store(), derivation(decl).id)
        if record is not None:
            out[name] = record
    return out


def verdict_counts(recs: dict[str, dict] | None = None) -> Counter[str]:
    recs = records() if recs is None else recs
    counts = Counter(r["verdict"] for r in recs.values())
    counts["not built"] = len(declarations()) - len(recs)
    return counts


def declaration_roots() -> set[str]:
    """Store objects the declarations pin (kept by gc even if never built)."""
    roots = {a.sha256 for a in toolchain()}
    for decl in declarations().values():
        roots.add(decl.sdist.sha256)
        roots.update(w.sha256 for w in decl.wheels)
        roots.update(a.sha256 for a in decl.build.all_inputs)
        if decl.test:
            roots.update(a.sha256 for a in decl.test.inputs)
            if decl.test.source:
                roots.add(decl.test.source.sha256)
    return roots


def gc(dry_run: bool = False) -> list[str]:
    s = store()
    if dry_run:
        live = s.reachable(declaration_roots())
        return [d for d in s.iter_objects() if d not in live]
    return s.gc(declaration_roots())


def snapshot(host: str = "127.0.0.1", port: int = 8080) -> bool:
    """Publish the checked, built set as one UnixFS DAG, a CAR, and a root in the store."""
    decls, recs, s = declarations(), records(), store()
    counts = verdict_counts(recs)
    print("snapshot: verdicts " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) +
          f" (of {len(decls)})", flush=True)
    try:
        snap, _ = snapshots.publish(s, decls, recs, lambda d, w: wheel_facts(d, w).metadata or b"",
                                    log=lambda m: print(m, flush=True))
    except snapshots.SnapshotRefused as e:
        for reason in e.reasons:
            print(f"snapshot: refused: {reason}", file=sys.stderr)
        return False
    url = f"http://{host}:{port}/ipfs/{snap.root}"
    print(f"""snapshot: root CID {snap.root}
  CAR      {snap.car_path} ({snap.car_size:,} bytes, sha256 {snap.car_sha256}, {snap.blocks} blocks)
  mirror   ipfs dag import {snap.car_path} && ipfs pin add {snap.root}
  serve    .venv/bin/doit serve   (or: python -m pipeline serve --host {host} --port {port})
  install  pip install --index-url {url}/simple/ NAME
           uv pip install --index-url {url}/simple/ NAME
  status   {url}/""", flush=True)
    return True


def wheel_facts(decl: Declaration, wheel: Artifact) -> WheelFacts:
    fetch(store(), wheel, what=f"{decl.path} (wheels)")
    return facts_for(store(), wheel.sha256, wheel.filename)


def check(json: bool = False) -> bool:
    """Run every rule over the declared set; one line per failure (or JSON); False fails the task."""
    decls = declarations()
    envs = environments.load(environments.ENVIRONMENTS_FILE)
    failures = run_rules(decls, envs, wheel_facts)
    print(report(failures, len(decls), len(envs), as_json=json))
    return not failures


def serve(host: str = "127.0.0.1", port: int = 8080) -> None:
    from pipeline.export.ipfs.gateway import serve as run_gateway

    latest = store().get_ref(snapshots.TAG_KIND, "latest")
    if latest:
        root = store().read_json(latest)["root"]
        print(f"latest snapshot: pip install --index-url http://{host}:{port}/ipfs/{root}/simple/ NAME", flush=True)
    run_gateway(store(), host, port)


def tested(name: str) -> bool:
    decl = declarations()[name]
    return testing.is_up_to_date(testing.load_result(store(), testing.plan(decl, declarations())))


def test_one(name: str) -> bool:
    """Run NAME's test suite; a failure blocks (returns False) unless the declaration marks it known."""
    decl = declarations()[name]
    try:
        p = testing.plan(decl, declarations())
        print(f"test:{name} {decl.version} (test id {p.id[:12]}, {len(p.wheels)} wheels)", flush=True)
        record = testing.run(p, store(), log=lambda m: print(f"  {m}", flush=True))
    except WheelproofError as e:
        print(f"test:{name}: error: {e}", file=sys.stderr)
        return False
    print(f"test:{testing.summary_line(record)}", flush=True)
    return record["outcome"] in ("passed", "known-failure")


def with_tests() -> list[str]:
    return [n for n, d in declarations().items() if d.test is not None]


def publish(secret_key: str = "") -> bool:
    """Sign and log the latest snapshot as a release, chained to the previous one."""
    import datetime as dt
    import json as jsonlib
    import os
    from pathlib import Path

    from pipeline.export.ipfs.gateway import DagReader
    from pipeline.export.ipfs.multiformats import CID
    from pipeline.trust import release, signing

    s = store()
    tag = s.get_ref(snapshots.TAG_KIND, "latest")
    if tag is None:
        print("publish: no snapshot yet (run `doit snapshot`)", file=sys.stderr)
        return False
    root = CID.parse(s.read_json(tag)["root"])
    reader = DagReader(s)
    node = reader.resolve(root, ["wheelproof.json"])
    published = jsonlib.loads(b"".join(reader.read(node, 0, reader.size(node))))["published"]
    decls = declarations()
    for w in published:
        decl = decls.get(w["project"])
        result = testing.load_result(s, testing.plan(decl, decls)) if decl is not None and decl.test else None
        w["tests"] = result["outcome"] if result else None
    counts = {"projects": len({w["project"] for w in published}), "wheels": len(published),
              "verdicts": dict(Counter(w["verdict"] for w in published)),
              "tests": dict(Counter(w["tests"] or "none" for w in published))}
    key_path = Path(secret_key or os.environ.get(signing.SECRET_KEY_ENV) or signing.DEFAULT_SECRET_KEY)
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    now = dt.datetime.fromtimestamp(int(sde), dt.UTC) if sde else dt.datetime.now(dt.UTC)
    rel = release.Releases.default(s)
    try:
        key = signing.load_secret_key(key_path)
        path, manifest = rel.publish(key, root, s.root / "cars" / f"{root}.car", published, counts,
                                     release.git_commit(DECLARATIONS_DIR), now,
                                     refuse_inside=[s.root, DECLARATIONS_DIR.parent], key_path=key_path)
    except WheelproofError as e:
        print(f"publish: {e}", file=sys.stderr)
        return False
    cp = rel.checkpoint(key.public)
    print(f"""publish: release {manifest['sequence']} {root}
  manifest   {path} (+ .minisig)
  changes    {manifest['changes']['summary']}
  log        {rel.log / 'checkpoint'} (size {cp.size if cp else 0})
  feed       {rel.root / 'feed.atom'}
  verify     minisign -Vm {path} -p {rel.root / 'wheelproof.pub'}
             python -m pipeline verify-release {path}""", flush=True)
    return True
