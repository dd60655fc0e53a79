"""What dodo.py's tasks call: thin wrappers joining declarations, store and steps."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, TypeVar

from pipeline.model.errors import DeclarationError, WheelproofError
from pipeline.model.locations import DECLARATIONS_DIR
from pipeline.realise.evaluation import Evaluation
from pipeline.realise.graph import BUILD, TEST, Graph, Node
from pipeline.store.local import GcReport, Store, default_root
from pipeline.store.refindex import RefIndex

# dodo.py imports this module for every doit command, so only what a no-op needs (the cached graph
# and the up-to-date index) is imported here; each action imports its own machinery.
if TYPE_CHECKING:
    from pipeline.model.declaration import Artifact, Declaration
    from pipeline.model.records import BuildRecord, SnapshotRecord, TestRecord
    from pipeline.realise.executor import Executor
    from pipeline.wheel.facts import WheelFacts

T = TypeVar("T")


@cache
def store() -> Store:
    return Store()


@cache
def evaluation() -> Evaluation:
    return Evaluation(DECLARATIONS_DIR, default_root())


def _or_exit(compute: Callable[[], T]) -> T:
    """Run an evaluation step; on any declaration problem, print them all and exit 2 (nothing is built)."""
    try:
        return compute()
    except DeclarationError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        print(f"{len(e.problems)} problem(s) in declarations; nothing was built", file=sys.stderr)
        raise SystemExit(2) from None


def graph() -> Graph:
    """The task graph, from the evaluation cache when no declaration changed."""
    return _or_exit(evaluation().graph)


def declarations() -> dict[str, Declaration]:
    """Every declaration, parsed and validated (cached by content)."""
    return _or_exit(evaluation().declarations)


def nodes(kind: str) -> list[Node]:
    return list(graph().of_kind(kind))


@cache
def _done_index(kind: str) -> RefIndex:
    from pipeline.model.records import BUILD_KIND, BuildRecord, TestRecord

    def done(name: str, digest: str) -> bool:
        record: BuildRecord | TestRecord | None = (
            store().read_record(BuildRecord, kind, name, digest) if kind == BUILD_KIND
            else store().read_record(TestRecord, kind, name, digest))
        return record is not None and record.succeeded

    return RefIndex(store(), kind, done)


def uptodate(key: str) -> bool:
    """doit's up-to-date check: the store holds a successful record for the node's id (one index read)."""
    node = graph()[key]
    return _done_index("builds" if node.kind == BUILD else "tests").done(node.id)


def realise(key: str) -> bool:
    """Run one build or test node and print its progress and verdict; False fails the doit task."""
    from pipeline.model.records import BuildRecord
    from pipeline.realise import testing
    from pipeline.realise.logs import pointer, printable
    from pipeline.realise.rebuild import verdict_line

    node = graph()[key]
    same_kind = [n.key for n in graph().of_kind(node.kind)]
    position = f"[{same_kind.index(key) + 1}/{len(same_kind)}]"
    decl = declarations()[node.name]
    what = "drv" if node.kind == BUILD else "test id"
    print(f"{position} {key} {decl.version} ({what} {node.id[:12]})", flush=True)
    try:
        record = executor().realise(node, log=lambda m: print(f"  {m}", flush=True))
    except WheelproofError as e:
        print(f"{position} {key}: error: {e}", file=sys.stderr)
        return False
    if isinstance(record, BuildRecord):
        print(f"{position} build:{verdict_line(record)}", flush=True)
        if not record.succeeded:
            print(printable(record.log_tail or ""), file=sys.stderr)
            print(pointer(node.name), file=sys.stderr)
        elif record.verdict == "differs":
            print(f"  {pointer(node.name)} --diff", flush=True)
    else:
        print(f"{position} test:{testing.summary_line(record)}", flush=True)
        if not record.succeeded:
            print(pointer(node.name, test=True), file=sys.stderr)
    return record.succeeded


def build_one(name: str) -> bool:
    from packaging.utils import canonicalize_name

    return realise(f"{BUILD}:{canonicalize_name(name)}")


def records() -> dict[str, BuildRecord]:
    """The build record of each declaration's current derivation (absent if never built)."""
    from pipeline.realise.rebuild import load_record

    out = {}
    for node in graph().of_kind(BUILD):
        record = load_record(store(), node.id)
        if record is not None:
            out[node.name] = record
    return out


def verdict_counts(recs: dict[str, BuildRecord] | None = None) -> Counter[str]:
    recs = records() if recs is None else recs
    counts = Counter(r.verdict for r in recs.values())
    counts["not built"] = len(nodes(BUILD)) - len(recs)
    return counts


def declaration_roots() -> set[str]:
    """Store objects the declarations pin (kept by gc even if never built)."""
    from pipeline.model.derivation import toolchain

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


def gc(dry_run: bool = False) -> GcReport:
    s = store()
    if dry_run:
        live = s.reachable(declaration_roots())
        return GcReport([d for d in s.iter_objects() if d not in live], [], [])
    return s.gc(declaration_roots())


def snapshot(host: str = "127.0.0.1", port: int = 8080, require_attestations: int = 0,
             trusted_keys: str = "") -> bool:
    """Publish the checked, built set as one UnixFS DAG, a CAR, and a root in the store.

    With ``require_attestations`` K, each project needs K trusted builders (``trusted_keys``, a PEM
    file) attesting this store's rebuilt digest, else nothing is published (docs/challenge.md)."""
    from pathlib import Path

    from pipeline.export import formats, torrent
    from pipeline.export import snapshot as snapshots
    from pipeline.model import environments
    from pipeline.trust.builder_key import load_trusted_keys
    from pipeline.trust.publication import attestation_refusals, published_attestations

    decls, recs, s = declarations(), records(), store()
    counts = verdict_counts(recs)
    print("snapshot: verdicts " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) +
          f" (of {len(decls)})", flush=True)
    if require_attestations or trusted_keys:
        try:
            if require_attestations < 1 or not trusted_keys:
                raise WheelproofError("--require-attestations K (K >= 1) and --trusted-keys FILE go together")
            trusted = load_trusted_keys(Path(trusted_keys))
            refusals = attestation_refusals(s, recs, {n: str(d.path) for n, d in decls.items()}, trusted,
                                            require_attestations)
        except WheelproofError as e:
            print(f"snapshot: {e}", file=sys.stderr)
            return False
        for reason in refusals:
            print(f"snapshot: refused: {reason}", file=sys.stderr)
        if refusals:
            return False
        print(f"snapshot: every project attested by {require_attestations} of {len(trusted)} trusted builders",
              flush=True)
    try:
        snap, _ = snapshots.publish(s, decls, recs, lambda d, w: wheel_facts(d, w).metadata or b"",
                                    attestations=lambda published: published_attestations(s, published),
                                    log=lambda m: print(m, flush=True), subtrees=formats.subtrees(
                                        environments.load(environments.ENVIRONMENTS_FILE),
                                        log=lambda m: print(m, flush=True), store=s,
                                        unavailable=lambda p, env: environments.unavailable(decls[p], env)))
        torrent_path, info = torrent.write(s, snap.root, formats.gateway_url())
    except snapshots.SnapshotRefused as e:
        for reason in e.reasons:
            print(f"snapshot: refused: {reason}", file=sys.stderr)
        return False
    except WheelproofError as e:
        print(f"snapshot: {e}", file=sys.stderr)
        return False
    url = f"http://{host}:{port}/ipfs/{snap.root}"
    print(f"""snapshot: root CID {snap.root}
  CAR      make with: python -m pipeline car {snap.root}  ({snap.car_size:,} bytes)
  mirror   ipfs dag import {snap.car_path} && ipfs pin add {snap.root}
  serve    .venv/bin/doit serve   (or: python -m pipeline serve --host {host} --port {port})
  install  pip install --index-url {url}/simple/ NAME
           uv pip install --index-url {url}/simple/ NAME
  status   {url}/
  torrent  {torrent_path} (v1 {info.info_hash_v1}, v2 {info.info_hash_v2})
  conda    {url}/conda/   (conda/noarch/repodata.json)
  locks    {url}/locks/   (pylock.<environment>.toml)""", flush=True)
    return True


def wheel_facts(decl: Declaration, wheel: Artifact) -> WheelFacts:
    from pipeline.realise.fetch import fetch
    from pipeline.wheel.facts import facts_for

    fetch(store(), wheel, what=f"{decl.path} (wheels)",
          log=lambda m: print(f"check: {m}", file=sys.stderr, flush=True))  # each download is shown
    return facts_for(store(), wheel.sha256, wheel.filename)


def check(json: bool = False) -> bool:
    """Run every rule over the declared set; one line per failure (or JSON); False fails the task."""
    from pipeline.model import environments
    from pipeline.policy.check import report, run_rules

    decls = declarations()
    envs = environments.load(environments.ENVIRONMENTS_FILE)
    failures = run_rules(decls, envs, wheel_facts)
    print(report(failures, len(decls), len(envs), as_json=json))
    return not failures


def latest_snapshot() -> SnapshotRecord | None:
    """The snapshot record the ``latest`` tag points at, checked field by field."""
    from pipeline.export.snapshot import TAG_KIND
    from pipeline.model.records import SnapshotRecord, decode

    digest = store().get_ref(TAG_KIND, "latest")
    return decode(SnapshotRecord, store().read_json(digest), f"refs/{TAG_KIND}/latest") if digest else None


def serve(host: str = "127.0.0.1", port: int = 8080) -> None:
    from pipeline.export.ipfs.gateway import serve as run_gateway

    latest = latest_snapshot()
    if latest:
        print(f"latest snapshot: pip install --index-url http://{host}:{port}/ipfs/{latest.root}/simple/ NAME",
              flush=True)
    run_gateway(store(), host, port)


def test_results() -> dict[str, TestRecord]:
    """The test record of each declaration's current test plan (absent if never run)."""
    from pipeline.realise import testing

    out = {}
    for node in graph().of_kind(TEST):
        result = testing.load_result_by_id(store(), node.id)
        if result is not None:
            out[node.name] = result
    return out


def publish(secret_key: str = "") -> bool:
    """Sign and log the latest snapshot as a release, chained to the previous one."""
    import datetime as dt
    import json as jsonlib
    import os
    from pathlib import Path

    from pipeline.export import torrent
    from pipeline.export.carmake import make_car
    from pipeline.export.ipfs.gateway import DagReader
    from pipeline.export.ipfs.multiformats import CID
    from pipeline.trust import release, signing

    s = store()
    latest = latest_snapshot()
    if latest is None:
        print("publish: no snapshot yet (run `doit snapshot`)", file=sys.stderr)
        return False
    root = CID.parse(latest.root)
    reader = DagReader(s)
    node = reader.resolve(root, ["wheelproof.json"])
    snapshot_doc = jsonlib.loads(b"".join(reader.read(node, 0, reader.size(node))))
    published, attested = snapshot_doc["published"], snapshot_doc.get("attestations", [])
    results = test_results()
    for w in published:
        result = results.get(w["project"])
        w["tests"] = result.outcome if result else None
    counts = {"projects": len({w["project"] for w in published}), "wheels": len(published),
              "verdicts": dict(Counter(w["verdict"] for w in published)),
              "tests": dict(Counter(w["tests"] or "none" for w in published))}
    key_path = Path(secret_key or os.environ.get(signing.SECRET_KEY_ENV) or signing.DEFAULT_SECRET_KEY)
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    now = dt.datetime.fromtimestamp(int(sde), dt.UTC) if sde else dt.datetime.now(dt.UTC)
    rel = release.Releases.default(s)
    if not torrent.torrent_path(s, root).is_file():
        print(f"publish: no torrent for {root} (run `doit snapshot`)", file=sys.stderr)
        return False
    try:
        key = signing.load_secret_key(key_path)
        made = make_car(s, root, log=lambda m: print(f"publish: {m}", flush=True))  # reused if made and checks
        path, manifest = rel.publish(key, root, made.path, published, counts,
                                     release.git_commit(DECLARATIONS_DIR), now,
                                     refuse_inside=[s.root, DECLARATIONS_DIR.parent], key_path=key_path,
                                     attestations=attested, car_digest=(made.sha256, made.size))
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
             python -m pipeline verify-release {path} --public-key {key_path.with_suffix('.pub')}""", flush=True)
    return True


def lock(names: list[str], environment: str | None, output: str, snapshot: str | None = None,
         gateway: str | None = None) -> bool:
    """``python -m pipeline lock``: a PEP 751 lock of NAME... from one snapshot, for one environment."""
    from pathlib import Path

    from packaging.markers import default_environment

    from pipeline.export import formats, pylock
    from pipeline.export.ipfs.multiformats import CID, CIDError
    from pipeline.model import environments
    from pipeline.model.records import SNAPSHOT_KIND

    s = store()
    try:
        envs = environments.load(environments.ENVIRONMENTS_FILE)
        if environment is None:
            here = default_environment()
            matches = [e for e in envs if all(e.markers[k] == here[k]  # type: ignore[literal-required]
                                              for k in ("python_version", "sys_platform", "platform_machine"))]
            if not matches:
                raise pylock.LockError("this machine is no supported environment: give --environment")
            env = matches[0]
        else:
            env = pylock.environment_named(environment, envs)
        out = pylock.lock_filename(Path(output))
        if snapshot is None:
            latest = latest_snapshot()
            if latest is None:
                raise pylock.LockError("no snapshot yet (run `doit snapshot`) and no --snapshot given")
            snapshot = latest.root
        try:
            root = CID.parse(snapshot)
        except CIDError as e:
            raise pylock.LockError(f"--snapshot {snapshot!r}: {e}") from e
        if s.get_ref(SNAPSHOT_KIND, str(root)) is None:
            raise pylock.LockError(f"--snapshot {root} is not a snapshot in {s.root}")
        text = pylock.lock(formats.snapshot_wheels(s, root, gateway), names, env)
    except WheelproofError as e:
        print(f"lock: {e}", file=sys.stderr)
        return False
    from pipeline.store.local import atomic_write

    atomic_write(out, text.encode())
    count = text.count("[[packages]]")
    print(f"lock: {out} for {env.name} from snapshot {root}: {count} packages")
    return True


# -- attestations (issue 11) ----------------------------------------------------------------------


def attestation_signer():  # type: ignore[no-untyped-def]
    """Every build is signed with this builder's key, created on first use (``builder-key`` shows it)."""
    from pipeline.trust import attestation, builder_key

    path = builder_key.builder_key_path()
    if not path.exists():
        try:
            key = builder_key.create_builder_key(path, refuse_inside=[store().root])
        except FileExistsError:  # another build created it meanwhile
            return attestation.signer(store(), builder_key.load_builder_key(path, refuse_inside=[store().root]))
        print(f"  created builder key {path} (key id {key.public.key_id[:16]}; "
              "`python -m pipeline builder-key --public` prints it)", flush=True)
    return attestation.signer(store(), builder_key.load_builder_key(path, refuse_inside=[store().root]))
_executor_lock = threading.Lock()


@cache
def _make_executor() -> Executor:
    """The farm's executor when ``WHEELPROOF_FARM`` is set (its summary printed at exit), else the local one."""
    import atexit

    from pipeline.farm.settings import FarmSettings
    from pipeline.realise.executor import LocalExecutor

    settings = FarmSettings.from_environment()
    if settings is None:
        return LocalExecutor(store(), declarations, attestation_signer())
    from pipeline.farm.executor import FarmExecutor
    from pipeline.trust.attestation import verify_attestation

    farm = FarmExecutor(settings, store(), declarations, check=verify_attestation)
    atexit.register(farm.close)
    return farm


def executor() -> Executor:
    with _executor_lock:  # doit's threads (farm mode) ask at once
        return _make_executor()


def farm_doit_config() -> dict[str, object]:
    """With a farm, doit runs nodes in threads, many at once (each waits on the farm); else nothing changes."""
    import os

    from pipeline.farm.settings import FARM_ENV

    if not os.environ.get(FARM_ENV):
        return {}
    return {"num_process": int(os.environ.get("WHEELPROOF_FARM_JOBS", "32")), "par_type": "thread"}


def car(root: str = "", output: str = "") -> bool:
    """Make the CAR of snapshot ``root`` (default: the latest) at ``output`` (default
    ``<store>/cars/<root>.car``), or reuse it if it is made and checks (pipeline/export/carmake.py)."""
    from pathlib import Path

    from pipeline.export.carmake import make_car
    from pipeline.export.ipfs.multiformats import CID

    try:
        cid = CID.parse(root) if root else None
    except ValueError as e:
        print(f"car: {root!r} is not a CID: {e}", file=sys.stderr)
        return False
    try:
        made = make_car(store(), cid, Path(output) if output else None, log=lambda m: print(m, flush=True))
    except WheelproofError as e:
        print(f"car: {e}", file=sys.stderr)
        return False
    print(f"car: {made.root}\n"
          f"  CAR      {made.path} ({made.size:,} bytes, sha256 {made.sha256}, {made.blocks} blocks)\n"
          f"  mirror   ipfs dag import {made.path} && ipfs pin add {made.root}", flush=True)
    return True
