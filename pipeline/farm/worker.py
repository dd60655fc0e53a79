"""``python -m pipeline worker``: a Dask worker that realises farm actions with its own store and key.

The worker carries a :class:`WheelproofPlugin` (a Dask ``WorkerPlugin``) holding its local store (a
cache: inputs fetched once, results kept), its builder key (its identity: every build it runs is
signed with it, through the same ``attest=`` path a local ``doit build`` uses) and the
platform it builds for, which it also advertises as a Dask resource so the scheduler sends it only
actions for that platform (:func:`pipeline.farm.action.platform_resource`).

:func:`run_action` is what the coordinator submits. It rebuilds the declarations the action carries
(checked by the same parser as any declaration), recomputes the node's id and refuses an action whose
id it does not arrive at (another builders/, platform or sandbox mode), fetches the inputs itself
(fixed-output, hash-checked), runs the build or test in the sandbox as ``doit`` does locally, and
returns the record, every output object by content and the signed attestation (DSSE envelope) the
record names. A successful record already in its store for that id is returned without running again (an action cache).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path, PurePosixPath

from distributed import Worker, WorkerPlugin, get_worker

from pipeline.farm.action import Action, ActionResult, platform_resource
from pipeline.farm.settings import FarmError
from pipeline.model.declaration import Declaration, load_all
from pipeline.model.records import BUILD_KIND, TEST_KIND, BuildRecord, TestRecord
from pipeline.realise import rebuild, testing
from pipeline.realise.graph import BUILD
from pipeline.store.local import Store
from pipeline.trust.attestation import signer
from pipeline.trust.builder_key import BuilderKey, load_builder_key

__all__ = ["PLUGIN_NAME", "TOPIC", "WheelproofPlugin", "run_action", "serve"]

PLUGIN_NAME = "wheelproof"
TOPIC = "wheelproof-farm"  # the events a worker logs for the coordinator's progress


class WheelproofPlugin(WorkerPlugin):
    """A farm worker's state: its own store, builder key and platform."""

    name = PLUGIN_NAME

    def __init__(self, store_root: Path, key: BuilderKey):
        self.store_root, self.key = store_root, key
        self.platform = platform_resource()
        self.worker_name = ""

    def setup(self, worker: Worker) -> None:
        self.worker_name = str(worker.name)
        self.store = Store(self.store_root)

    @property
    def builder_key_id(self) -> str:
        return self.key.public.key_id

    def execute(self, action: Action) -> ActionResult:
        with tempfile.TemporaryDirectory(dir=self.store.tmp, prefix="farm-") as tmp:
            decls = _declarations(action, Path(tmp) / "declarations")
            decl = decls[action.name]
            node_id = rebuild.derivation(decl).id if action.kind == BUILD else testing.plan(decl, decls).id
            if node_id != action.node_id:
                raise FarmError(f"worker {self.worker_name}: {action.key}'s declarations give id {node_id}, not "
                                f"{action.node_id} (this worker's builders/, platform or sandbox mode differ)")
            cached = self._cached(action)
            record = cached or self._run(action, decl, decls)
        return self._result(action, record, cached is not None, decl)

    def _cached(self, action: Action) -> BuildRecord | TestRecord | None:
        found = (rebuild.load_record(self.store, action.node_id) if action.kind == BUILD
                 else testing.load_result_by_id(self.store, action.node_id))
        return found if found is not None and found.succeeded else None

    def _run(self, action: Action, decl: Declaration, decls: dict[str, Declaration]) -> BuildRecord | TestRecord:
        if action.kind == BUILD:
            return rebuild.build(decl, self.store, log=lambda m: None, attest=signer(self.store, self.key))
        return testing.run(testing.plan(decl, decls), self.store, log=lambda m: None)

    def _result(self, action: Action, record: BuildRecord | TestRecord, cached: bool,
                decl: Declaration) -> ActionResult:
        kind = BUILD_KIND if action.kind == BUILD else TEST_KIND
        record_digest = self.store.get_ref(kind, action.node_id)
        if record_digest is None:
            raise FarmError(f"worker {self.worker_name}: no record for {action.key} after running it")
        pinned = set()
        if isinstance(record, BuildRecord):
            pinned = set(record.inputs.values())
        wanted = {record_digest, record.log.sha256, *(set(record.references) - pinned)}
        if isinstance(record, BuildRecord) and record.output is not None:
            wanted.add(record.output.sha256)
        blobs = {d: self.store.read_bytes(d) for d in sorted(wanted)}  # every read re-hashed
        attestation = None
        if isinstance(record, BuildRecord) and record.attestation is not None:
            attestation = blobs[record.attestation.sha256]  # the record references its envelope
        return ActionResult(action.digest, action.kind, action.node_id, record_digest, blobs, self.worker_name,
                            self.builder_key_id, attestation, cached)


def _declarations(action: Action, root: Path) -> dict[str, Declaration]:
    """Write the action's declaration texts under ``root`` (``<xx>/<name>.toml`` only) and parse them all."""
    for d in action.declarations:
        rel = PurePosixPath(d.relative_path)
        if len(rel.parts) != 2 or any(p in ("", ".", "..") or p.startswith(".") for p in rel.parts):
            raise FarmError(f"{action.key}: declaration path {d.relative_path!r} is not <xx>/<name>.toml")
        path = root / rel.parts[0] / rel.parts[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(d.text)
    decls = load_all(root)
    if action.name not in decls:
        raise FarmError(f"{action.key}: the action carries no declaration of {action.name}")
    return decls


def run_action(action: Action) -> ActionResult:
    """The function a coordinator submits: realise ``action`` on this worker."""
    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if not isinstance(plugin, WheelproofPlugin):
        raise FarmError(f"worker {worker.name} was not started by `python -m pipeline worker` (no store, no key)")
    worker.log_event(TOPIC, {"event": "started", "key": action.key, "name": plugin.worker_name})
    return plugin.execute(action)


async def _serve(scheduler: str, plugin: WheelproofPlugin, nthreads: int, name: str | None) -> None:
    async with Worker(scheduler, nthreads=nthreads, name=name, resources={plugin.platform: nthreads},
                      plugins=(plugin,), dashboard=False, memory_limit=0, death_timeout=60) as worker:
        print(f"worker {worker.name} at {worker.address}: store {plugin.store_root}, builder key "
              f"{plugin.builder_key_id} ({plugin.key.path}), {nthreads} slot(s) for {plugin.platform}", flush=True)
        await worker.finished()


def serve(scheduler: str, store_root: Path, key_path: Path | None = None, nthreads: int = 1,
          name: str | None = None) -> None:
    """Run a farm worker until the scheduler goes away or the process is stopped."""
    key = load_builder_key(key_path, refuse_inside=[store_root])
    plugin = WheelproofPlugin(store_root.resolve(), key)
    Store(plugin.store_root)  # create it (and fail here, not mid-build, if it cannot be)
    try:
        asyncio.run(_serve(scheduler, plugin, nthreads, name))
    except KeyboardInterrupt:
        pass
