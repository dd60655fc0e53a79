"""Commands for builder identity and rebuild attestations (docs/challenge.md):
``builder-key``, ``attestation``, ``export-attestations``, ``import-attestations``, ``challenge``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "COMMANDS"]


def _builder_key(args: argparse.Namespace) -> int:
    from pipeline.cli import tasks
    from pipeline.trust.builder_key import builder_key_path, create_builder_key, load_builder_key

    path = builder_key_path(args.key)
    refuse = [tasks.store().root]
    if args.public:
        key = load_builder_key(path, refuse_inside=refuse)
        print(key.public.pem(), end="")
        print(f"key id {key.public.key_id}")
        return 0
    if path.exists():
        key = load_builder_key(path, refuse_inside=refuse)
        print(f"builder key {path} exists (key id {key.public.key_id}); not replaced")
        return 0
    key = create_builder_key(path, refuse_inside=refuse)
    print(f"wrote builder key {path} (mode 0600; never put it in a store or a snapshot)")
    print(f"key id {key.public.key_id}; share `python -m pipeline builder-key --public` with challengers")
    return 0


def _attestation(args: argparse.Namespace) -> int:
    import json

    from packaging.utils import canonicalize_name

    from pipeline.cli import tasks
    from pipeline.model.dsse import Envelope
    from pipeline.model.errors import WheelproofError
    from pipeline.realise.rebuild import load_record

    name = canonicalize_name(args.name)
    if f"build:{name}" not in tasks.graph():
        raise WheelproofError(f"no declaration named {args.name!r}")
    node = tasks.graph()[f"build:{name}"]
    record = load_record(tasks.store(), node.id)
    if record is None or record.attestation is None:
        raise WheelproofError(f"{name}: derivation {node.id[:12]} has no attestation in {tasks.store().root} "
                              f"(run `doit build:{name}`)")
    data = tasks.store().read_bytes(record.attestation.sha256)
    if args.statement:
        env = Envelope.decode(data, f"attestation of {name}")
        print(json.dumps(json.loads(env.payload), indent=1))
    else:
        print(data.decode())
    return 0


def _export(args: argparse.Namespace) -> int:
    from pipeline.cli import tasks
    from pipeline.trust.challenge import export_attestations

    current = {n.id for n in tasks.nodes("build")} if not args.all else None
    envelopes, keys, wheels = export_attestations(tasks.store(), Path(args.dir), current)
    print(f"export-attestations: {envelopes} attestations by {keys} builders, {wheels} rebuilt wheels in {args.dir}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from pipeline.cli import tasks
    from pipeline.trust.challenge import import_attestations, open_source

    total, failed = 0, False
    for spec in args.sources:
        n, problems = import_attestations(tasks.store(), open_source(spec, tasks.store()))
        total += n
        for p in problems:
            print(f"import-attestations: refused: {p}", file=sys.stderr)
        failed = failed or bool(problems)
    print(f"import-attestations: {total} attestations into {tasks.store().root}")
    return 1 if failed else 0


def _challenge(args: argparse.Namespace) -> int:
    from packaging.utils import canonicalize_name

    from pipeline.cli import tasks
    from pipeline.trust.builder_key import load_trusted_keys
    from pipeline.trust.challenge import challenge, open_source

    trusted = load_trusted_keys(Path(args.trusted_keys)) if args.trusted_keys else None
    sources = [open_source(spec, tasks.store()) for spec in args.sources]
    report = challenge(sources, trusted, [canonicalize_name(n) for n in args.names])
    print(report.to_json() if args.json else report.text())
    return 1 if report.failing else 0


COMMANDS = {
    "builder-key": (_builder_key, "create this builder's Ed25519 key (--public: print it as PEM and its key id)"),
    "attestation": (_attestation, "print the signed attestation (DSSE envelope) of NAME's current build"),
    "export-attestations": (_export, "write the store's attestations, builder keys and rebuilt wheels to DIR"),
    "import-attestations": (_import, "copy attestations (and their keys, wheels) from stores/exports/snapshots"),
    "challenge": (_challenge, "compare builders' attestations per derivation: identical / differ / inconclusive"),
}


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "builder-key":
        p.add_argument("--public", action="store_true", help="print the public key (PEM SPKI) and key id")
        p.add_argument("--key", help="the key file (default $WHEELPROOF_BUILDER_KEY or "
                                     "~/.config/wheelproof/builder.key)")
    elif name == "attestation":
        p.add_argument("name")
        p.add_argument("--statement", action="store_true", help="print the decoded in-toto statement instead")
    elif name == "export-attestations":
        p.add_argument("dir")
        p.add_argument("--all", action="store_true", help="every stored attestation, not only current derivations'")
    elif name == "import-attestations":
        p.add_argument("sources", nargs="+", metavar="SOURCE")
    elif name == "challenge":
        p.add_argument("names", nargs="*", metavar="NAME")
        p.add_argument("--from", dest="sources", action="append", required=True, metavar="SOURCE",
                       help="a store, an export-attestations directory, a snapshot CID or a .car file")
        p.add_argument("--trusted-keys", help="PEM public keys of the builders to trust, one after another")
        p.add_argument("--json", action="store_true")
