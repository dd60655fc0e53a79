"""The unit of work a farm runs, shaped like a remote-execution action (REAPI ``Action``/``ActionResult``).

An :class:`Action` names one build or test node by the content id of its work (the derivation id or
the test plan id) and carries the declaration texts a worker needs to recompute that id itself; its
:attr:`Action.digest` is the SHA-256 of its canonical JSON, so the same work always has the same key
and another engine could run it later. An :class:`ActionResult` comes back with its outputs addressed
by content (``blobs``: SHA-256 → bytes) and is hostile until :func:`pipeline.farm.verify.verify_result`
says otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.model.declaration import Declaration
from pipeline.model.derivation import build_platform, canonical_json
from pipeline.realise import testing
from pipeline.realise.graph import BUILD, TEST, Node

__all__ = ["DeclarationText", "Action", "ActionResult", "action_for", "platform_resource"]


@dataclass(frozen=True)
class DeclarationText:
    """One declaration file as the coordinator read it (``<xx>/<name>.toml`` under the declarations root)."""

    relative_path: str
    text: str


@dataclass(frozen=True)
class Action:
    kind: str  # BUILD or TEST
    name: str  # the project's canonical name
    node_id: str  # the derivation id (build) or test plan id (test) the worker must arrive at
    declarations: tuple[DeclarationText, ...]  # the node's declaration (first) and, for a test, its closure

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def digest(self) -> str:
        """SHA-256 over the work: the node's id and the exact declaration texts it is computed from."""
        doc = {"schema": 1, "kind": self.kind, "name": self.name, "id": self.node_id,
               "declarations": [{"path": d.relative_path, "sha256": hashlib.sha256(d.text.encode()).hexdigest()}
                                for d in self.declarations]}
        return hashlib.sha256(canonical_json(doc)).hexdigest()


@dataclass(frozen=True)
class ActionResult:
    """What a worker returns: the record's digest, every output object by content, and who made them."""

    action_digest: str
    kind: str
    node_id: str
    record: str  # SHA-256 of the record object (zstd JSON) among ``blobs``
    blobs: Mapping[str, bytes]  # SHA-256 -> bytes: the record, its log, the rebuilt wheel(s)
    worker: str  # the Dask worker's name (for reports; not trusted)
    builder_key_id: str  # the worker's builder key id (hex); only an attestation makes it a fact
    attestation: bytes | None = None  # the signed attestation envelope, when the worker made one
    cached: bool = False  # the worker's own store already held a successful record for this id


def _text_of(decl: Declaration) -> DeclarationText:
    return DeclarationText(f"{decl.path.parent.name}/{decl.path.name}", decl.path.read_text())


def action_for(node: Node, decls: Mapping[str, Declaration]) -> Action:
    """The action for a build or test node: the declaration(s) it is computed from and its id."""
    decl = decls[node.name]
    needed = [decl]
    if node.kind == TEST:
        assert decl.test is not None
        needed += [d for d in testing.runtime_closure(decl, decls, decl.test.requires) if d is not decl]
    elif node.kind != BUILD:
        raise ValueError(f"{node.key} is not run on a farm")
    return Action(node.kind, node.name, node.id, tuple(_text_of(d) for d in needed))


def platform_resource() -> str:
    """The Dask resource a worker advertises and an action asks for: this interpreter and platform.

    A derivation id covers the build platform (implementation, Python version, platform, machine,
    libc), so only a worker on the same platform can realise it; the scheduler matches on this name.
    """
    p = build_platform()
    return f"wheelproof-{p['implementation']}{p['python']}-{p['platform']}-{p['libc'] or 'nolibc'}"
