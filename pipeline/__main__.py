"""Command line: ``python -m pipeline COMMAND`` (doit tasks call the same functions)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import WheelproofError


def _declare(args: argparse.Namespace) -> int:
    from .declare import declare
    from .index import SimpleIndex

    for spec in args.specs:
        declare(spec, index=SimpleIndex(args.index_url))
    return 0


def _build(args: argparse.Namespace) -> int:
    from . import tasks

    ok = True
    for name in args.names:
        ok = tasks.build_one(name) and ok
    return 0 if ok else 1


def _fsck(args: argparse.Namespace) -> int:
    from .store import Store

    store = Store()
    problems = store.fsck()
    for p in problems:
        print(p)
    n = sum(1 for _ in store.iter_objects())
    print(f"fsck: {n} objects, {len(problems)} problems in {store.root}")
    return 1 if problems else 0


def _gc(args: argparse.Namespace) -> int:
    from . import tasks

    removed = tasks.gc(dry_run=False)
    print(f"gc: removed {len(removed)} unreachable objects")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .declaration import DECLARATIONS_DIR, load_all

    decls = load_all(DECLARATIONS_DIR)
    print(f"{len(decls)} declarations are valid")
    return 0


def _check(args: argparse.Namespace) -> int:
    from . import tasks

    return 0 if tasks.check(json=args.json) else 1


def _serve(args: argparse.Namespace) -> int:
    from . import tasks

    tasks.serve(args.host, args.port)
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "declare": (_declare, "write declarations/<xx>/<name>.toml for NAME==VERSION from the index"),
    "build": (_build, "build declarations by name (what `doit build:NAME` runs)"),
    "check": (_check, "the repository's consistency rules (what `doit check` runs)"),
    "serve": (_serve, "serve the store's snapshots as an IPFS gateway (what `doit serve` runs)"),
    "validate": (_validate, "load every declaration and report every problem"),
    "fsck": (_fsck, "verify every object in the store"),
    "gc": (_gc, "delete store objects no declaration, build record or snapshot references"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == "declare":
            p.add_argument("specs", nargs="+", metavar="NAME==VERSION")
            p.add_argument("--index-url", default=None)
        elif name == "build":
            p.add_argument("names", nargs="+")
        elif name == "serve":
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=8080)
        elif name == "check":
            p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if getattr(args, "index_url", "x") is None:
        from .index import DEFAULT_INDEX

        args.index_url = DEFAULT_INDEX
    try:
        return COMMANDS[args.command][0](args)
    except WheelproofError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_status


if __name__ == "__main__":
    sys.exit(main())
