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
from pipeline.trust.attestation import sign_record, stored_attestations, stored_public_keys, verify_attestation
from pipeline.trust.builder_key import BuilderKey, create_builder_key, load_builder_key
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
            plugin = WheelproofPlugin(root / "w" / "store", create_builder_key(root / "w" / "builder.key"))
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


def _trusting(*keys: BuilderKey) -> FarmSettings:
    return FarmSettings("tcp://127.0.0.1:1", tuple(TrustedKey(k.path, k.public) for k in keys))


def _worker_key(result: ActionResult, decls) -> BuilderKey:
    key = load_builder_key(decls["tiny"].path.parent.parent.parent / "w" / "builder.key")
    assert key.public.key_id == result.builder_key_id
    return key


def _resigned(result: ActionResult, key: BuilderKey, **statement) -> ActionResult:
    """A valid signature by ``key`` over a statement of the record with ``statement``'s fields changed,
    and a record re-made to name that envelope (what a worker holding a trusted key could send)."""
    from pipeline.model.records import BuildRecord, decode

    doc = _record(result)
    record = decode(BuildRecord, doc, "record")
    envelope, ref = sign_record(dataclasses.replace(record, **statement), key)
    old = doc["attestation"]["sha256"]
    doc["attestation"] = {"sha256": ref.sha256, "key_id": ref.key_id}
    doc["references"] = sorted({*doc["references"], ref.sha256} - {old})
    r = _with_record(result, doc)
    return dataclasses.replace(r, attestation=envelope,
                               blobs={d: b for d, b in r.blobs.items() if d != old} | {ref.sha256: envelope})


def test_the_worker_signed_its_build_with_its_builder_key(honest):
    world, decls, node, action, result = honest
    record = _record(result)
    assert result.attestation is not None and record["attestation"]["key_id"] == result.builder_key_id
    assert hashlib.sha256(result.attestation).hexdigest() == record["attestation"]["sha256"]
    assert result.blobs[record["attestation"]["sha256"]] == result.attestation


def test_a_trusted_workers_attested_build_is_accepted_and_stored_as_a_local_one(honest):
    world, decls, node, action, result = honest
    key = _worker_key(result, decls)
    with pytest.raises(FarmError, match="no attestation verifier"):
        require_check(_trusting(key), None)
    accept(world.store, verify_result(world.store, node, action, result, decls, _trusting(key), verify_attestation))
    [(drv, key_id, envelope)] = list(stored_attestations(world.store))
    assert (drv, key_id, envelope) == (node.id, key.public.key_id, result.attestation)
    assert stored_public_keys(world.store) == {key_id: key.public}
    verified = verify_attestation(envelope, [key.public], derivation_id=node.id, rebuilt_sha256=_wheel(result))
    assert verified.verdict == "differs"


def test_attestations_are_required_and_checked_when_the_farm_trusts_keys(honest, tmp_path):
    world, decls, node, action, result = honest
    key = _worker_key(result, decls)
    stranger = create_builder_key(tmp_path / "stranger.key")
    other_envelope, _ = sign_record(dataclasses.replace(_decode_record(result), verdict="identical"), key)
    cases = {
        "no attestation, and the farm accepts only attested builds":
            (dataclasses.replace(result, attestation=None), _trusting(key)),
        "which is not a trusted key": (result, _trusting(stranger)),
        "not the envelope the record names": (dataclasses.replace(result, attestation=other_envelope), _trusting(key)),
        # a valid signature by the trusted key, over a statement about another wheel digest
        f"but the attestation's subject is {'0' * 12}": (_resigned(result, key, output=dataclasses.replace(
            _decode_record(result).output, sha256="0" * 64)), _trusting(key)),
        f"derivationId {'1' * 12} is not the hash": (_resigned(result, key, derivation_id="1" * 64), _trusting(key)),
        "verdict 'identical'": (_resigned(result, key, verdict="identical"), _trusting(key)),
    }
    for message, (forged, settings) in cases.items():
        before = _objects(world.store)
        with pytest.raises(ResultRejected, match=message.replace("(", r"\(")) as e:
            verify_result(world.store, node, action, forged, decls, settings, verify_attestation)
        assert "build:tiny: result from worker 'w1' rejected" in str(e.value)
        assert _objects(world.store) == before and world.store.get_ref("builds", node.id) is None


def _decode_record(result: ActionResult):
    from pipeline.model.records import BuildRecord, decode

    return decode(BuildRecord, _record(result), "record")


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


def test_the_farms_trusted_keys_are_pem_builder_keys(tmp_path, monkeypatch):
    a, b = (create_builder_key(tmp_path / f"{n}.key").public for n in "ab")
    (tmp_path / "both.pem").write_text(a.pem() + b.pem())
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.pem").write_text(a.pem())
    (tmp_path / "dir" / "b.pem").write_text(b.pem())
    monkeypatch.setenv("WHEELPROOF_FARM", "tcp://127.0.0.1:1")
    for source in ("both.pem", "dir"):
        monkeypatch.setenv("WHEELPROOF_FARM_TRUSTED", str(tmp_path / source))
        settings = FarmSettings.from_environment()
        assert settings is not None and {t.key_id for t in settings.trusted} == {a.key_id, b.key_id}
    monkeypatch.setenv("WHEELPROOF_FARM_TRUSTED", "")
    assert FarmSettings.from_environment().trusted == ()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "w.pub").write_text("untrusted comment: minisign public key\nRWQ=\n")
    (tmp_path / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    for source, message in (("old", "no *.pem builder public key"), ("bad.pem", "not a PEM public key"),
                            ("missing.pem", "No such file")):
        monkeypatch.setenv("WHEELPROOF_FARM_TRUSTED", str(tmp_path / source))
        with pytest.raises(FarmError, match=f"WHEELPROOF_FARM_TRUSTED.*{message.replace('*', '[*]')}"):
            FarmSettings.from_environment()
