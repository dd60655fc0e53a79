"""Command line: ``python -m pipeline COMMAND`` (doit tasks call the same functions)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pipeline.cli import attest
from pipeline.model.errors import WheelproofError


def _declare(args: argparse.Namespace) -> int:
    from pipeline.realise.declare import declare
    from pipeline.realise.index import SimpleIndex

    if args.with_deps or args.with_test_deps:
        from pipeline.policy.settle import declare_with_deps

        report = declare_with_deps(args.specs, index=SimpleIndex(args.index_url),
                                   with_test_deps=args.with_test_deps)
        print(f"declare: {len(report.declared)} declared, {len(report.present)} already in the set, "
              f"{len(report.failed)} not declarable")
        for name, version in sorted(report.declared.items()):
            print(f"  declared  {name} {version}")
        for name, entries in sorted(report.unsupported.items()):
            for entry in entries:
                print(f"  unsupported  {name} {entry}")
        for name, changes in sorted(report.extras.items()):
            for change in changes:
                print(f"  extra  {name} {change}")
        for line in report.conflicts:
            print(f"  conflict  {line}")
        for name, why in sorted(report.failed.items()):
            print(f"  not declared  {name}: {why}")
        for line in report.check:
            print(f"  check fails  {line}")
        if not report.check:
            print("check: its rules hold on what was declared and settled")
        return 1 if report.failed or report.conflicts or report.check else 0
    for spec in args.specs:
        declare(spec, index=SimpleIndex(args.index_url))
    return 0


def _log(args: argparse.Namespace) -> int:
    from packaging.utils import canonicalize_name

    from pipeline.cli import tasks
    from pipeline.realise.logs import view

    decls = tasks.declarations()
    name = canonicalize_name(args.name)
    if name not in decls:
        raise WheelproofError(f"no declaration named {args.name!r} under {tasks.DECLARATIONS_DIR}")
    shown = view(tasks.store(), decls[name], decls, test=args.test, diff=args.diff)
    print(f"== {shown.title} ==")
    print(shown.text, end="" if shown.text.endswith("\n") else "\n")
    return 0


def _update(args: argparse.Namespace) -> int:
    from pipeline.policy.update import update
    from pipeline.realise.index import SimpleIndex

    report = update(args.names, index=SimpleIndex(args.index_url), min_age=args.min_age)
    print(f"update: {len(report.updated)} updated, {len(report.current)} current, {len(report.refused)} refused")
    for c in report.updated:
        print(f"  updated  {c.name} {c.old} -> {c.new}")
        for line in c.lines:
            print(f"           {line}")
    for name, why in sorted(report.refused.items()):
        print(f"  refused  {name}: {why}")
    return 1 if report.refused else 0


def _conditions(args: argparse.Namespace) -> int:
    from packaging.utils import canonicalize_name

    from pipeline.cli import tasks
    from pipeline.realise.conditions import infer_for, write_conditions

    decls = tasks.declarations()
    names: list[str] = [canonicalize_name(n) for n in args.names] or sorted(decls)
    unknown = [n for n in names if n not in decls]
    if unknown:
        raise WheelproofError(f"no declaration named {', '.join(unknown)} under {tasks.DECLARATIONS_DIR}")
    changed = 0
    for name in names:
        change = infer_for(decls[name], tasks.store(), log=lambda line: None)
        mark = "changed" if change.changed else "same"
        print(f"{name}: {change.inferred.describe() or 'none'} ({mark})")
        for key, text in change.inferred.evidence:
            print(f"    {key}: {text}")
        if change.changed:
            changed += 1
            if args.write:
                write_conditions(decls[name], change.inferred)
    verb = "written" if args.write else "differ from the declarations (--write writes them)"
    print(f"conditions: {len(names)} declarations, {changed} {verb}")
    return 1 if changed and not args.write else 0


def _build(args: argparse.Namespace) -> int:
    from pipeline.cli import tasks

    ok = True
    for name in args.names:
        ok = tasks.build_one(name) and ok
    return 0 if ok else 1


def _fsck(args: argparse.Namespace) -> int:
    from pipeline.store.local import Store

    store = Store()
    problems = store.fsck()
    for p in problems:
        print(p)
    n = sum(1 for _ in store.iter_objects())
    print(f"fsck: {n} objects, {len(problems)} problems in {store.root}")
    return 1 if problems else 0


def _gc(args: argparse.Namespace) -> int:
    from pipeline.cli import tasks

    report = tasks.gc(dry_run=False)
    for problem in report.skipped:
        print(f"gc: left alone: {problem}", file=sys.stderr)
    print(f"gc: removed {len(report.removed)} unreachable objects, {len(report.tmp_removed)} leftovers in tmp/")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from pipeline.model.declaration import DECLARATIONS_DIR, load_all
    from pipeline.model.derivation import toolchain
    from pipeline.model.errors import DeclarationError

    problems = []
    decls: dict = {}
    tools: tuple = ()
    try:
        decls = load_all(DECLARATIONS_DIR)
    except DeclarationError as e:
        problems += e.problems
    try:
        tools = toolchain()
    except DeclarationError as e:
        problems += e.problems
    if problems:
        raise DeclarationError(problems)
    print(f"{len(decls)} declarations are valid; builders/toolchain.toml: {len(tools)} tools are valid")
    return 0


def _check(args: argparse.Namespace) -> int:
    from pipeline.cli import tasks

    return 0 if tasks.check(json=args.json) else 1


def _serve(args: argparse.Namespace) -> int:
    from pipeline.cli import tasks

    tasks.serve(args.host, args.port)
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.trust.signing import DEFAULT_SECRET_KEY, write_keypair

    secret = Path(args.secret or DEFAULT_SECRET_KEY)
    public = Path(args.public or secret.with_suffix(".pub"))
    key = write_keypair(secret, public)
    print(f"wrote secret key {secret} (mode 0600; keep it out of the store and the repository)")
    print(f"wrote public key {public} (key id {key.public.key_id_hex})")
    return 0


def _releases():  # type: ignore[no-untyped-def]
    from pipeline.store.local import Store
    from pipeline.trust.release import Releases

    return Releases.default(Store())


def _verify_release(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pipeline.export.carmake import make_car
    from pipeline.export.ipfs.multiformats import CID
    from pipeline.store.local import Store
    from pipeline.trust.pinned import PinnedCheckpoint
    from pipeline.trust.release import ReleaseError, Releases
    from pipeline.trust.verifier import default_state, trusted_key, verify_logged_release

    if args.manifest:
        manifest = Path(args.manifest)
        rel = Releases(manifest.parent.parent) if manifest.parent.name == "manifests" else _releases()
    else:
        rel = _releases()
        latest = rel.latest()
        if latest is None:
            raise ReleaseError(f"{rel.root / 'latest'} is missing: name a manifest")
        manifest = latest
    if not manifest.is_file():
        raise ReleaseError(f"{manifest} is missing")
    is_latest = rel.latest() is not None and manifest.resolve() == rel.latest().resolve()  # type: ignore[union-attr]
    public, key_path = trusted_key(args.public_key, rel.root)
    sig = Path(args.signature or str(manifest) + ".minisig")
    try:
        doc = json.loads(manifest.read_bytes())
        car_name, root = doc["car"]["filename"], CID.parse(doc["root"])
    except (ValueError, KeyError, TypeError) as e:
        raise ReleaseError(f"{manifest}: not a release manifest ({e})") from None
    if args.car:
        car_path = Path(args.car)
    else:  # the local store's CAR of the released root, made now if it is not made yet
        if car_name != f"{root}.car":
            raise ReleaseError(f"{manifest}: its CAR is named {car_name!r}, not {root}.car: pass --car FILE")
        car_path = make_car(Store(), root, log=lambda m: None).path if Store().get_ref(
            "snapshots", str(root)) is not None else Store().root / "cars" / car_name
    state = PinnedCheckpoint(Path(args.state) if args.state else default_state())
    verify_logged_release(rel, manifest, sig, car_path, public, state, is_latest)
    print(f"  key        {public.key_id_hex} from {key_path}")
    return 0


def _car(args: argparse.Namespace) -> int:
    from pipeline.cli import tasks

    return 0 if tasks.car(args.root or "", args.output or "") else 1


def _prove_inclusion(args: argparse.Namespace) -> int:
    import base64

    from pipeline.trust.release import prove_inclusion

    rel = _releases()
    def match(doc: dict) -> bool:  # type: ignore[type-arg]
        return (doc["kind"] == "wheel" and doc["filename"] == args.wheel) if args.wheel else \
            (doc["kind"] == "release" and doc["root"] == args.release)
    found = prove_inclusion(rel, rel.public_key(), match)
    if not found:
        print("not in the log", file=sys.stderr)
        return 1
    for index, doc, proof, cp in found:
        print(f"entry {index} of {cp.size}: {doc}")
        _print_proof(f"checkpoint root {base64.b64encode(cp.root).decode()}; inclusion proof verified", proof)
    return 0


def _print_proof(title: str, hashes: list[bytes]) -> None:
    import base64

    print(f"{title}:")
    for h in hashes:
        print(f"    {base64.b64encode(h).decode()}")


def _prove_consistency(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.trust.release import prove_consistency

    rel = _releases()
    old, new, proof = prove_consistency(rel, rel.public_key(), Path(args.old_checkpoint).read_text())
    _print_proof(f"checkpoint {new.size} extends checkpoint {old.size}: consistency proof verified", proof)
    return 0


def _diff(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pipeline.trust.release import diff, diff_text

    rel = _releases()

    def find(ref: str) -> dict:  # type: ignore[type-arg]
        path = Path(ref)
        if not path.is_file():
            def names(p: Path) -> tuple[str, str]:
                sequence, cid = p.stem.split("-", 1)
                return str(int(sequence)), cid
            matches = [p for p in rel.manifest_paths() if ref in names(p)]
            if len(matches) != 1:
                raise SystemExit(f"no release {ref!r} (give a sequence number, a root CID or a manifest path)")
            path = matches[0]
        return rel.verify_manifest(path, rel.public_key())

    d = diff(find(args.old), find(args.new))
    print(json.dumps(d, indent=1) if args.json else diff_text(d))
    return 0


def _lock(args: argparse.Namespace) -> int:
    from pipeline.cli import tasks

    return 0 if tasks.lock(args.names, args.environment, args.output, args.snapshot, args.gateway) else 1
def _client_snapshot(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from pathlib import Path

    from pipeline.client.source import open_snapshot

    return open_snapshot(args.snapshot, gateway=args.gateway, release=Path(args.release) if args.release else None,
                         trusted_key=Path(args.trusted_key) if args.trusted_key else None)


def _client_allow(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from pathlib import Path

    from pipeline.client.allow import Allowlist, load_allow_file

    base = load_allow_file(Path(args.allow_file)) if args.allow_file else Allowlist()
    return base.plus(args.allow or [])


def _verify_env(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.client.layout import probe
    from pipeline.client.verify_env import verify_env

    report = verify_env(probe(Path(args.python)), _client_snapshot(args), _client_allow(args))
    print(report.to_json() if args.json else report.text())
    return 1 if report.failing else 0


def _install(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.client.install import install

    report = install(args.names, Path(args.into), _client_snapshot(args), _client_allow(args))
    print(report.to_json() if args.json else report.text())
    return 1 if report.failing else 0


def _proxy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.client.proxy import serve_proxy

    serve_proxy(args.upstream, Path(args.release), Path(args.trusted_key), args.host, args.port)
    return 0


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshot", required=True, help="a root CID or a release manifest (with --trusted-key)")
    p.add_argument("--gateway", help="fetch verified blocks from this untrusted gateway (default: the local store)")
    p.add_argument("--release", help="a release manifest the --snapshot CID must be the root of")
    p.add_argument("--trusted-key", help="the release key (minisign public key), obtained out of band")
    p.add_argument("--allow", action="append", metavar="PATTERN", help="except findings whose subject matches")
    p.add_argument("--allow-file", help="exceptions file (docs/environment.md)")
    p.add_argument("--json", action="store_true")


def _worker(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.farm.settings import scheduler_address
    from pipeline.farm.worker import serve
    from pipeline.store.local import default_root

    serve(scheduler_address(args.scheduler), Path(args.store) if args.store else default_root(),
          Path(args.builder_key) if args.builder_key else None, args.nthreads, args.name)
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "declare": (_declare, "write declarations/<xx>/<name>.toml for NAME==VERSION from the index"),
    "build": (_build, "build declarations by name (what `doit build:NAME` runs)"),
    "check": (_check, "the repository's consistency rules (what `doit check` runs)"),
    "serve": (_serve, "serve the store's snapshots as an IPFS gateway (what `doit serve` runs)"),
    "keygen": (_keygen, "create the release signing key (minisign format)"),
    "verify-release": (_verify_release, "verify a release from its manifest, signature, CAR and public key"),
    "prove-inclusion": (_prove_inclusion, "print and verify a log inclusion proof for a wheel or release"),
    "prove-consistency": (_prove_consistency, "print and verify that the log extends an older checkpoint"),
    "diff": (_diff, "what changed between two releases (sequence number, CID or manifest path)"),
    "validate": (_validate, "load every declaration and report every problem"),
    "fsck": (_fsck, "verify every object in the store"),
    "gc": (_gc, "delete store objects no declaration, build record or snapshot references"),
    "lock": (_lock, "write a PEP 751 pylock.toml for NAME... and their closure from one snapshot"),
    "verify-env": (_verify_env, "check every importable file of an environment against a snapshot's wheels"),
    "install": (_install, "install names and their closure from a snapshot, sandboxed and verified"),
    "proxy": (_proxy, "serve pip/uv locally from an untrusted gateway, verifying every block of a release"),
    **attest.COMMANDS,
    "worker": (_worker, "run a build farm worker (Dask) for the scheduler at tcp://HOST:PORT"),
    "update": (_update, "re-declare NAME... (default: all) at newer releases older than --min-age days, "
                        "refused if check then fails"),
    "conditions": (_conditions, "infer NAME...'s (default: all) build conditions from upstream's wheel and sdist; "
                                "--write puts them in [build.conditions]"),
    "log": (_log, "print the build log (--test: the test log; --diff: the comparison) of NAME's current derivation"),
    "car": (_car, "make a snapshot's CAR (default: the latest, to <store>/cars/<root>.car); reused if made"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == "declare":
            p.add_argument("specs", nargs="+", metavar="NAME==VERSION")
            p.add_argument("--index-url", default=None)
            p.add_argument("--with-deps", action="store_true",
                           help="also declare every dependency, over every supported environment")
            p.add_argument("--with-test-deps", action="store_true",
                           help="--with-deps, plus what the [test] tables require")
        elif name == "build":
            p.add_argument("names", nargs="+")
        elif name == "update":
            p.add_argument("names", nargs="*", metavar="NAME")
            p.add_argument("--min-age", type=float, default=0, metavar="DAYS",
                           help="only releases uploaded at least DAYS ago (PEP 700 upload-time)")
            p.add_argument("--index-url", default=None)
        elif name == "conditions":
            p.add_argument("names", nargs="*", metavar="NAME")
            p.add_argument("--write", action="store_true", help="write what changed into the declarations")
        elif name == "log":
            p.add_argument("name")
            p.add_argument("--test", action="store_true", help="the test run's log")
            p.add_argument("--diff", action="store_true", help="the comparison with upstream, with its diff")
        elif name == "serve":
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=8080)
        elif name == "keygen":
            p.add_argument("--secret")
            p.add_argument("--public")
        elif name == "verify-release":
            p.add_argument("manifest", nargs="?", help="a manifest (default: the release directory's latest)")
            p.add_argument("--signature")
            p.add_argument("--car")
            p.add_argument("--public-key", help="the trusted key (else $WHEELPROOF_TRUSTED_KEY, "
                                                "~/.config/wheelproof/trusted.pub); never the release dir's")
            p.add_argument("--state", help="the newest checkpoint seen before (else $WHEELPROOF_TRUSTED_CHECKPOINT, "
                                           "~/.config/wheelproof/trusted-checkpoint)")
        elif name == "prove-inclusion":
            g = p.add_mutually_exclusive_group(required=True)
            g.add_argument("--wheel", help="wheel filename")
            g.add_argument("--release", help="release root CID")
        elif name == "prove-consistency":
            p.add_argument("old_checkpoint", help="a saved copy of an older log/checkpoint")
        elif name == "diff":
            p.add_argument("old")
            p.add_argument("new")
            p.add_argument("--json", action="store_true")
        elif name == "check":
            p.add_argument("--json", action="store_true")
        elif name == "lock":
            p.add_argument("names", nargs="+", metavar="NAME")
            p.add_argument("--environment", help="a supported environment (default: this machine's)")
            p.add_argument("-o", "--output", default="pylock.toml")
            p.add_argument("--snapshot", help="root CID (default: the latest snapshot)")
            p.add_argument("--gateway", help="gateway URL (default $WHEELPROOF_GATEWAY_URL or http://127.0.0.1:8080)")
        elif name == "verify-env":
            p.add_argument("python", nargs="?", default=sys.executable, help="the interpreter (default: this one)")
            _client_args(p)
        elif name == "install":
            p.add_argument("names", nargs="+", metavar="NAME")
            p.add_argument("--into", required=True, metavar="VENV", help="an existing virtual environment")
            _client_args(p)
        elif name == "proxy":
            p.add_argument("--upstream", required=True, help="the untrusted gateway (http://host:port)")
            p.add_argument("--release", required=True, metavar="MANIFEST")
            p.add_argument("--trusted-key", required=True, metavar="KEY")
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=8081)
        elif name in attest.COMMANDS:
            attest.add_arguments(name, p)
        elif name == "worker":
            p.add_argument("--scheduler", required=True, metavar="tcp://HOST:PORT")
            p.add_argument("--store", help="this worker's own store (default $WHEELPROOF_STORE or ./store)")
            p.add_argument("--builder-key", help="this worker's builder key (default $WHEELPROOF_BUILDER_KEY "
                                                 "or ~/.config/wheelproof/builder.key)")
            p.add_argument("--nthreads", type=int, default=1, help="builds at once (default 1)")
            p.add_argument("--name", help="the worker's name on the farm (default: its address)")
        elif name == "car":
            p.add_argument("root", nargs="?", metavar="ROOT", help="snapshot root CID (default: the latest)")
            p.add_argument("-o", "--output", metavar="FILE", help="default <store>/cars/<root>.car")
    args = parser.parse_args(argv)
    if getattr(args, "index_url", "x") is None:
        from pipeline.realise.index import DEFAULT_INDEX

        args.index_url = DEFAULT_INDEX
    try:
        return COMMANDS[args.command][0](args)
    except WheelproofError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_status

