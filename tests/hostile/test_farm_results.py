"""A farm worker is hostile: every result it returns is checked before the coordinator's store takes it.

Each forged result is rejected with a message naming the node, the worker and what is wrong, and
nothing of it is stored (no ref, no object)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import threading
import types

import pytest
import zstandard

from pipeline.farm.action import ActionResult, action_for
from pipeline.farm.settings import FarmError, FarmSettings, TrustedKey
from pipeline.farm.verify import ResultRejected, accept, require_check, verify_result
from pipeline.farm.worker import WheelproofPlugin
from pipeline.model.declaration import load_all
from pipeline.realise.graph import plan
from pipeline.store.local import Store
from pipeline.trust.signing import SecretKey, write_keypair
from tests.conftest import World, _QuietFiles

NO_TRUST = FarmSettings("tcp://127.0.0.1:1", ())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real build by a worker's plugin (its own store), and what it returns for build:tiny."""
    root = tmp_path_factory.mktemp("farm-worker")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("WHEELPROOF_ALLOW_LOOPBACK", "1")  # the fixture files are served on 127.0.0.1
            world = World(root, root / "declarations", root / "store", root / "dist",
                          f"http://127.0.0.1:{httpd.server_address[1]}")
            world.declarations.mkdir()
            world.declare_tiny("tiny", mutate_upstream=True)  # verdict "differs": the rebuild is not upstream's
            decls = load_all(world.declarations)
            node = plan(decls)["build:tiny"]
            key = root / "w" / "builder.key"
            plugin = WheelproofPlugin(root / "w" / "store", key, write_keypair(key, key.with_suffix(".pub")))
            plugin.store, plugin.worker_name = Store(plugin.store_root), "w1"
            action = action_for(node, decls)
            result = plugin.execute(action)
    finally:
        httpd.shutdown()
        httpd.server_close()
    return decls, node, action, result


@pytest.fixture
def honest(built, tmp_path):
    """The build's result and a fresh coordinator store (a namespace with ``store``)."""
    return types.SimpleNamespace(store=Store(tmp_path / "coordinator")), *built


def _objects(store: Store) -> set[str]:
    return set(store.iter_objects())


def _record(result: ActionResult) -> dict:
    return json.loads(zstandard.ZstdDecompressor().decompress(result.blobs[result.record]))


def _with_record(result: ActionResult, doc: dict) -> ActionResult:
    data = zstandard.ZstdCompressor().compress(json.dumps(doc).encode())
    digest = hashlib.sha256(data).hexdigest()
    blobs = {d: b for d, b in result.blobs.items() if d != result.record} | {digest: data}
    return dataclasses.replace(result, record=digest, blobs=blobs)


def _wheel(result: ActionResult) -> str:
    return _record(result)["output"]["sha256"]


def _flip(result: ActionResult) -> ActionResult:
    w = _wheel(result)
    b = result.blobs[w]
    return dataclasses.replace(result, blobs={**result.blobs, w: b[:-1] + bytes([b[-1] ^ 1])})


def _swap_wheel(result: ActionResult) -> ActionResult:
    """Another wheel, and a record re-made to name it consistently (a coherent forgery)."""
    doc = _record(result)
    old = doc["output"]["sha256"]
    forged = result.blobs[old].replace(b"X = 1", b"X = 9")
    new = hashlib.sha256(forged).hexdigest()
    doc["output"].update(sha256=new, size=len(forged))
    doc["references"] = sorted({*doc["references"], new} - {old})
    doc["verdict"] = "identical"
    r = _with_record(result, doc)
    return dataclasses.replace(r, blobs={d: b for d, b in r.blobs.items() if d != old} | {new: forged})


def _edit(**changes):
    def forge(result: ActionResult) -> ActionResult:
        doc = _record(result)
        doc.update(changes)
        return _with_record(result, doc)
    return forge


FORGERIES = {
    "wheel-bytes-changed": (_flip, "hash to"),
    "wheel-swapped-claimed-identical": (_swap_wheel, "contradicts the hashes"),
    "record-for-another-derivation": (_edit(derivation_id="0" * 64), "the ref names"),
    "record-other-inputs": (_edit(inputs={"evil.tar.gz": "1" * 64}), "record inputs"),
    "record-other-version": (_edit(version="6.6.6"), "record version"),
    "record-not-a-record": (_edit(kind="snapshot"), "expected a build-record"),
    "record-unknown-field": (_edit(backdoor=True), "unknown field 'backdoor'"),
    "record-missing": (lambda r: dataclasses.replace(r, record="f" * 64), "was not returned"),
    "log-missing": (lambda r: dataclasses.replace(r, blobs={d: b for d, b in r.blobs.items()
                                                            if d != _record(r)["log"]["sha256"]}), "log"),
    "extra-object": (lambda r: dataclasses.replace(r, blobs={**r.blobs, hashlib.sha256(b"x").hexdigest(): b"x"}),
                     "which the record does not name"),
    "answers-another-action": (lambda r: dataclasses.replace(r, action_digest="a" * 64), "it answers action"),
    "zstd-bomb": (lambda r: _with_bytes(r, zstandard.ZstdCompressor().compress(b" " * (17 << 20))),
                  "decompresses to more than"),
    "not-zstd": (lambda r: _with_bytes(r, b"{}"), "not a zstd document"),
}


def _with_bytes(result: ActionResult, data: bytes) -> ActionResult:
    digest = hashlib.sha256(data).hexdigest()
    return dataclasses.replace(result, record=digest, blobs={
        d: b for d, b in result.blobs.items() if d != result.record} | {digest: data})


def test_the_honest_result_verifies_and_is_stored(honest):
    world, decls, node, action, result = honest
    verified = verify_result(world.store, node, action, result, decls, NO_TRUST)
    accept(world.store, verified)
    assert world.store.get_ref("builds", node.id) == result.record
    assert verified.record.verdict == "differs" and world.store.has(verified.record.output.sha256)


@pytest.mark.parametrize("case", sorted(FORGERIES))
def test_a_forged_result_is_rejected_and_nothing_is_stored(honest, case):
    world, decls, node, action, result = honest
    forge, message = FORGERIES[case]
    before = _objects(world.store)
    with pytest.raises(ResultRejected) as e:
        verify_result(world.store, node, action, forge(result), decls, NO_TRUST)
    assert message in str(e.value) and "build:tiny" in str(e.value)
    assert "worker 'w1'" in str(e.value) or "the worker returned" in str(e.value)
    assert _objects(world.store) == before and world.store.get_ref("builds", node.id) is None
    assert not list(world.store.tmp.iterdir())


@dataclasses.dataclass(frozen=True)
class Claims:
    subject_digests: tuple[str, ...]
    derivation_id: str
    builder_key_id: str
    verdict: str


def _trusting(tmp_path) -> tuple[FarmSettings, SecretKey]:
    secret = write_keypair(tmp_path / "b.key", tmp_path / "b.pub")
    return FarmSettings("tcp://127.0.0.1:1", (TrustedKey(tmp_path / "b.pub", secret.public),)), secret


def test_attestations_are_required_and_checked_when_the_farm_trusts_keys(honest, tmp_path):
    world, decls, node, action, result = honest
    settings, secret = _trusting(tmp_path)
    with pytest.raises(FarmError, match="no attestation verifier"):
        require_check(settings, None)
    wheel, drv, kid = _wheel(result), node.id, secret.public.key_id_hex
    cases = {
        "no attestation, and the farm accepts only attested builds": (None, Claims((wheel,), drv, kid, "differs")),
        "is not among its subjects": (b"env", Claims(("0" * 64,), drv, kid, "differs")),
        "not a trusted builder key": (b"env", Claims((wheel,), drv, "0123456789ABCDEF", "differs")),
        f"for derivation {'1' * 64}": (b"env", Claims((wheel,), "1" * 64, kid, "differs")),
        "verdict 'identical'": (b"env", Claims((wheel,), drv, kid, "identical")),
    }
    for message, (envelope, claims) in cases.items():
        def check(env, trusted, claims=claims):
            assert [k.key_id_hex for k in trusted] == [kid]
            return claims
        forged = dataclasses.replace(result, attestation=envelope)
        with pytest.raises(ResultRejected, match=message.replace("(", r"\(")):
            verify_result(world.store, node, action, forged, decls, settings, check)
    def bad_signature(env, trusted):
        raise ResultRejected("signature does not verify")
    with pytest.raises(ResultRejected, match="attestation: signature does not verify"):
        verify_result(world.store, node, action, dataclasses.replace(result, attestation=b"env"), decls,
                      settings, bad_signature)
    good = verify_result(world.store, node, action, dataclasses.replace(result, attestation=b"env"), decls,
                         settings, lambda env, trusted: Claims((wheel,), drv, kid, "differs"))
    accept(world.store, good)
    assert world.store.read_bytes(world.store.get_ref("attestations", node.id)) == b"env"


@pytest.mark.integration
@pytest.mark.sandbox
def test_a_forging_worker_on_a_real_farm_is_rejected_end_to_end(world, farm, monkeypatch):
    world.declare_tiny("tiny")
    farm.start_worker("forger", module="tests.hostile.forging_worker")
    for k, v in farm.env().items():
        monkeypatch.setenv(k, v)
    before = _objects(world.store)
    run = world.doit("build")
    assert run.returncode != 0
    assert "build:tiny: result from worker 'forger' rejected: blobs[" in run.stderr, run.stderr
    assert "farm: 1 node(s) in" in run.stderr and "0 done, 1 failed (1 rejected)" in run.stderr
    assert list(world.store.list_refs("builds")) == [] and _objects(world.store) == before
