"""A real farm on 127.0.0.1 for the tests: a ``dask scheduler`` and workers started as
``python -m pipeline worker``, each with its own store and builder key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.trust.builder_key import create_builder_key

START_TIMEOUT = 60.0


@dataclass
class FarmWorker:
    name: str
    process: subprocess.Popen[bytes]
    store_root: Path
    public_key: Path
    log: Path

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)  # the worker and its builds (bubblewrap dies with it)
        self.process.wait(10)


@dataclass
class Farm:
    root: Path
    address: str
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, FarmWorker] = field(default_factory=dict)

    def start_worker(self, name: str, module: str = "pipeline") -> FarmWorker:
        key = self.root / name / "builder.key"
        key.with_suffix(".pem").write_text(create_builder_key(key).public.pem())
        store, log = self.root / name / "store", self.root / name / "worker.log"
        cmd = [sys.executable, "-m", module, "worker", "--scheduler", self.address, "--store", str(store),
               "--builder-key", str(key), "--name", name]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=Path(__file__).resolve().parent.parent)
        worker = FarmWorker(name, proc, store, key.with_suffix(".pem"), log)
        self.workers[name] = worker
        deadline = time.monotonic() + START_TIMEOUT
        while f"worker {name} at" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        return worker

    def env(self, trusted: Path | None = None) -> dict[str, str]:
        """The coordinator's settings: this farm, trusting the builder keys in ``trusted`` (else none)."""
        return {"WHEELPROOF_FARM": self.address, "WHEELPROOF_FARM_TRUSTED": str(trusted or "")}

    def stop(self) -> None:
        for w in self.workers.values():
            if w.process.poll() is None:
                w.kill()
        os.killpg(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait(10)


def start_farm(root: Path) -> Farm:
    root.mkdir(parents=True, exist_ok=True)
    info = root / "scheduler.json"
    with open(root / "scheduler.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                 "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while not info.exists() or not info.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the scheduler did not start:\n{(root / 'scheduler.log').read_text()}")
        time.sleep(0.1)
    time.sleep(0.2)  # the file is written before it is complete on some versions
    return Farm(root, json.loads(info.read_text())["address"], proc)
