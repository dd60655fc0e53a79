"""The task graph as data: a pure function from declarations to nodes with ids and dependencies.

Nodes are what doit runs (``build:NAME``, ``test:NAME``, ``check``, ``snapshot``) and what a farm
schedules. A node's ``id`` is the content id of its work: the derivation id for a build, the test
plan id for a test run (empty for ``check`` and ``snapshot``, which always run). dodo.py turns
nodes into doit tasks; an :class:`~pipeline.realise.executor.Executor` realises them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.model.declaration import Declaration

__all__ = ["BUILD", "TEST", "CHECK", "SNAPSHOT", "Node", "Graph", "plan"]

BUILD, TEST, CHECK, SNAPSHOT = "build", "test", "check", "snapshot"


@dataclass(frozen=True)
class Node:
    kind: str
    name: str  # the project's canonical name; "" for set-wide nodes
    id: str  # content id of the work ("" when the node always runs)
    deps: tuple[str, ...]  # keys of the nodes that must succeed first
    doc: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {n.key: n for n in self.nodes})

    def __getitem__(self, key: str) -> Node:
        return self._by_key[key]  # type: ignore[attr-defined, no-any-return]

    def __contains__(self, key: str) -> bool:
        return key in self._by_key  # type: ignore[attr-defined]

    def of_kind(self, kind: str) -> Iterator[Node]:
        return (n for n in self.nodes if n.kind == kind)

    def order(self) -> list[Node]:
        """Every node after the nodes it depends on (deterministic: ties broken by key)."""
        sorter = TopologicalSorter({n.key: n.deps for n in self.nodes})
        sorter.prepare()
        out: list[Node] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            out += [self[k] for k in ready]
            sorter.done(*ready)
        return out


def plan(decls: Mapping[str, Declaration]) -> Graph:
    """The graph for a set of declarations (keyed by canonical name)."""
    # Imported here: a cached graph is unpickled without the machinery that computed it.
    from pipeline.realise import testing
    from pipeline.realise.rebuild import derivation

    nodes: list[Node] = []
    builds, tests = [], []
    for name, decl in sorted(decls.items()):
        build = Node(BUILD, name, derivation(decl).id, (),
                     f"rebuild {decl.name} {decl.version} and compare with the upstream wheel")
        nodes.append(build)
        builds.append(build.key)
        if decl.test is not None:
            test = Node(TEST, name, testing.plan(decl, decls).id, (build.key,),
                        f"run {decl.name}'s own tests against the wheel we publish")
            nodes.append(test)
            tests.append(test.key)
    nodes.append(Node(CHECK, "", "", (), "the repository's rules over every declaration and environment"))
    nodes.append(Node(SNAPSHOT, "", "", (*builds, CHECK, *tests), "build and check everything, then publish"))
    return Graph(tuple(nodes))
