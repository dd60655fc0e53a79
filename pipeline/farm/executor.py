"""``FarmExecutor``: the :class:`~pipeline.realise.executor.Executor` that realises nodes on Dask workers.

``WHEELPROOF_FARM=tcp://HOST:PORT doit build|test|snapshot`` hands each build and test node to this
executor; doit keeps the dependency order (a test starts after its build is accepted) and runs many
nodes at once in threads (``cli.tasks.farm_doit_config``), each waiting on one Dask future. A node is
submitted as an :class:`~pipeline.farm.action.Action` under the key ``wheelproof-<action digest>`` and
asks for the coordinator's platform resource, so only a worker that can build it runs it; if the
worker running it dies, the scheduler runs it again on another (Dask's ``allowed-failures``). The result
is verified (:func:`pipeline.farm.verify.verify_result`) before the coordinator's store accepts it; a
rejected result is reported and nothing of it is stored. What is accepted is up to date by the store,
so a coordinator killed half-way resumes where it stopped.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from pipeline.farm.action import action_for, platform_resource
from pipeline.farm.progress import Progress
from pipeline.farm.settings import FarmError, FarmSettings
from pipeline.farm.verify import AttestationCheck, ResultRejected, accept, require_check, verify_result
from pipeline.farm.worker import TOPIC, run_action
from pipeline.model.declaration import Declaration
from pipeline.model.errors import WheelproofError
from pipeline.model.records import BuildRecord, TestRecord
from pipeline.realise.executor import Log
from pipeline.realise.graph import Node
from pipeline.store.local import Store

__all__ = ["CONNECT_TIMEOUT", "FarmExecutor"]

CONNECT_TIMEOUT = 30.0


class FarmExecutor:
    """Realise nodes on the farm at ``settings.scheduler``; store only what verifies."""

    def __init__(self, settings: FarmSettings, store: Store,
                 declarations: Callable[[], Mapping[str, Declaration]],
                 check: AttestationCheck | None = None, out: TextIO | None = None):
        from distributed import Client

        require_check(settings, check)
        self.settings, self.store, self._declarations, self._check = settings, store, declarations, check
        self.resource = platform_resource()
        self.progress = Progress(out or sys.stderr)
        try:
            self.client = Client(settings.scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise FarmError(f"no farm scheduler at {settings.scheduler} ({e})") from e
        self.client.subscribe_topic(TOPIC, self._on_event)
        self._closed = threading.Event()

    def _on_event(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        if isinstance(msg, dict) and msg.get("event") == "started":
            self.progress.started(str(msg.get("key")), str(msg.get("name")))

    def _require_worker(self) -> None:
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        if not any(self.resource in (w.get("resources") or {}) for w in workers.values()):
            raise FarmError(f"no worker on the farm at {self.settings.scheduler} builds for {self.resource} "
                            f"({len(workers)} worker(s) connected); start one with "
                            f"`python -m pipeline worker --scheduler {self.settings.scheduler}` on such a machine")

    def realise(self, node: Node, log: Log) -> BuildRecord | TestRecord:
        decls = self._declarations()
        action = action_for(node, decls)
        self._require_worker()
        self.progress.submitted(node.key)
        future = self.client.submit(run_action, action, key=f"wheelproof-{action.digest}",
                                    resources={self.resource: 1}, pure=False)
        try:
            try:
                result = future.result()
            except WheelproofError:
                raise
            except Exception as e:  # KilledWorker, CancelledError, a lost scheduler...
                raise FarmError(f"{node.key}: the farm gave up: {type(e).__name__}: {e}") from e
            finally:
                future.release()
            try:
                verified = verify_result(self.store, node, action, result, decls, self.settings, self._check)
            except ResultRejected:
                self.progress.finished(node.key, getattr(result, "worker", ""), False, rejected=True)
                raise
            accept(self.store, verified)
        except WheelproofError:
            if self.progress.state.get(node.key) != "failed":
                self.progress.finished(node.key, "", False)
            raise
        log(f"from worker {result.worker}" + (" (its cache)" if result.cached else "") +
            f": record {result.record[:12]}, {len(result.blobs)} objects verified and stored")
        self.progress.finished(node.key, result.worker, verified.record.succeeded, cached=result.cached)
        return verified.record

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self.progress.close()
        self.client.close()
