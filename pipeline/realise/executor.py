"""Executors: what realises a graph node (locally now; a farm later) behind one protocol.

dodo.py asks an executor to realise each ``build:NAME`` and ``test:NAME`` node in dependency order;
the result is the typed record the store keeps. :class:`LocalExecutor` runs the node in this process
tree, in the sandbox.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from pipeline.model.declaration import Declaration
from pipeline.model.records import BuildRecord, TestRecord
from pipeline.realise import rebuild, testing
from pipeline.realise.graph import BUILD, TEST, Node
from pipeline.store.local import Store

__all__ = ["Executor", "LocalExecutor"]

Log = Callable[[str], None]


class Executor(Protocol):
    def realise(self, node: Node, log: Log) -> BuildRecord | TestRecord:
        """Run ``node``'s work and return its record, stored in the coordinator's store."""
        ...


class LocalExecutor:
    """Realise nodes here, with the given store and declarations; ``attest`` signs each build record
    (the command layer passes the builder key's signer, pipeline/trust/attestation.py)."""

    def __init__(self, store: Store, declarations: Callable[[], Mapping[str, Declaration]],
                 attest: rebuild.Attest | None = None):
        self.store, self._declarations, self._attest = store, declarations, attest

    def realise(self, node: Node, log: Log) -> BuildRecord | TestRecord:
        decls = self._declarations()
        decl = decls[node.name]
        if node.kind == BUILD:
            return rebuild.build(decl, self.store, log=log, attest=self._attest)
        if node.kind == TEST:
            return testing.run(testing.plan(decl, decls), self.store, log=log)
        raise ValueError(f"{node.key} is not realised by an executor")
