"""Issue 11: derivation ids every builder agrees on, signed rebuild attestations, challenge, enforcement."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import SSlibKey

from pipeline.model.dsse import INTOTO_PAYLOAD_TYPE, Envelope, pae
from pipeline.model.records import BuildRecord
from pipeline.realise.rebuild import derivation, load_record
from pipeline.trust.attestation import verify_attestation
from pipeline.trust.builder_key import BuilderPublicKey, load_builder_key

from .conftest import REPO, needs_bwrap

VENV_SITE = next((REPO / ".venv" / "lib").glob("python3*/site-packages"), None)
OTHER_PYTHON = Path("/usr/bin/python3.11")  # Debian's CPython: another build and patch release than .venv's

# A package that embeds where the host staged its build (the source of its bind mount): honest builders
# differ in it, so challenge must show the member.
LEAKY_HOOK = """
import json, pathlib
here = pathlib.Path(__file__).parent
where = "?"
for line in open("/proc/self/mountinfo"):
    parts = line.split()
    if parts[4] == str(here):
        where = parts[3]
spec = json.loads((here / "tiny.json").read_text())
spec["files"]["leaky_where.py"] = "BUILT_IN = " + repr(where) + "\\n"
(here / "tiny.json").write_text(json.dumps(spec))
"""


def securesystemslib_verify(envelope: bytes, public: BuilderPublicKey) -> dict:
    """The independent implementation: securesystemslib's DSSE envelope verifier."""
    key = SSlibKey.from_crypto(public.crypto, keyid=public.key_id)
    env = SslibEnvelope.from_dict(json.loads(envelope))
    accepted = env.verify([key], 1)
    assert list(accepted) == [public.key_id]
    assert env.payload_type == INTOTO_PAYLOAD_TYPE
    return json.loads(env.payload)


def test_pae_is_the_dsse_specs_and_securesystemslibs():
    assert pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"  # the spec's own example
    env = SslibEnvelope(b"{}", INTOTO_PAYLOAD_TYPE, {})
    assert Envelope(b"{}", INTOTO_PAYLOAD_TYPE, ()).pae() == env.pae()


_ID_SCRIPT = """
import os, platform, sys, sysconfig
if os.environ.get("DISGUISE"):  # another host: kernel, libc, platform strings, hash seed
    platform.release = lambda: "9.99.0-other-kernel"
    platform.libc_ver = lambda *a, **k: ("musl", "1.2.4")
    sysconfig.get_platform = lambda: "linux-other"
from pipeline.model.declaration import load
from pipeline.realise.rebuild import derivation
d = derivation(load(__import__("pathlib").Path(sys.argv[1]), __import__("pathlib").Path(sys.argv[2])))
print(d.id, sys.version.split()[0])
"""


def _id_in(python: str, decl_path: Path, root: Path, env: dict[str, str], cwd: Path) -> tuple[str, str]:
    out = subprocess.run([python, "-c", _ID_SCRIPT, str(decl_path), str(root)], env=env, cwd=cwd,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    drv, version = out.stdout.split()
    return drv, version


def test_two_interpreters_and_hosts_compute_one_derivation_id(world, tmp_path):
    decl = world.declare_tiny("tiny", "1.0")
    base = {**world.env(), "PYTHONPATH": f"{REPO}:{VENV_SITE}"}
    a = _id_in(sys.executable, decl.path, world.declarations, base, REPO)
    other = tmp_path / "elsewhere"
    other.mkdir()
    b = _id_in(str(OTHER_PYTHON), decl.path, world.declarations,
               {**base, "DISGUISE": "1", "PYTHONHASHSEED": "4242", "TMPDIR": str(other), "HOME": str(other),
                "TZ": "Asia/Tokyo", "LANG": "C"}, other)
    assert a[1] != b[1], "the two interpreters should be different patch releases"
    assert a[0] == b[0] == derivation(decl).id
    # ... and the declared target is an input: another target is another derivation
    (world.declarations / "environments.toml").write_text(
        (REPO / "declarations" / "environments.toml").read_text().replace(
            'target = "cp311-manylinux-x86_64"', 'target = "cp311-manylinux-aarch64"'))
    c = _id_in(sys.executable, decl.path, world.declarations, base, REPO)
    assert c[0] != a[0]


def test_limits_and_sandbox_spec_are_inputs(world):
    from dataclasses import replace

    decl = world.declare_tiny("tiny", "1.0")
    drv = derivation(decl)
    desc = drv.description()
    assert desc["limits"] == decl.build.limits.to_json() and desc["sandbox"]["mode"] == "bubblewrap"
    assert len(desc["sandbox"]["spec"]) == 64 and desc["target"]["name"] == "cp311-manylinux-x86_64"
    raised = replace(decl, build=replace(decl.build, limits=replace(decl.build.limits, memory=8 << 30)))
    assert derivation(raised).id != drv.id
    assert "platform" not in desc  # nothing of the computing machine


def test_builder_key_command(world, tmp_path):
    key_path = tmp_path / "keys" / "builder.key"
    env = {**world.env(), "WHEELPROOF_BUILDER_KEY": str(key_path)}
    run = subprocess.run([sys.executable, "-m", "pipeline", "builder-key"], env=env, capture_output=True, text=True,
                         cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    pub = subprocess.run([sys.executable, "-m", "pipeline", "builder-key", "--public"], env=env, capture_output=True,
                         text=True, cwd=REPO)
    assert pub.returncode == 0, pub.stderr
    assert pub.stdout.startswith("-----BEGIN PUBLIC KEY-----\n")
    key = load_builder_key(key_path)
    assert f"key id {key.public.key_id}\n" in pub.stdout
    assert BuilderPublicKey.from_pem(pub.stdout.encode(), "stdout") == key.public
    # a key may not live in the store
    inside = {**world.env(), "WHEELPROOF_BUILDER_KEY": str(world.store_root / "builder.key")}
    bad = subprocess.run([sys.executable, "-m", "pipeline", "builder-key"], env=inside, capture_output=True,
                         text=True, cwd=REPO)
    assert bad.returncode != 0 and "may not live inside" in bad.stderr
    assert not (world.store_root / "builder.key").exists()


@needs_bwrap
def test_every_build_is_attested_and_securesystemslib_verifies_it(world, _builder_key):
    decl = world.declare_tiny("tiny", "1.0")
    r = world.doit("build:tiny")
    assert r.returncode == 0, r.stderr + r.stdout
    record = load_record(world.store, derivation(decl).id)
    assert isinstance(record, BuildRecord) and record.attestation is not None and record.host is not None
    envelope = world.store.read_bytes(record.attestation.sha256)
    public = load_builder_key(_builder_key).public
    statement = securesystemslib_verify(envelope, public)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    subjects = {s["annotations"]["wheelproof:role"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert subjects == {"rebuilt": record.output.sha256, "upstream": record.upstream.sha256}
    bd, rd = statement["predicate"]["buildDefinition"], statement["predicate"]["runDetails"]
    assert bd["externalParameters"]["derivationId"] == record.derivation_id
    assert {d["digest"]["sha256"] for d in bd["resolvedDependencies"]} >= {decl.sdist.sha256}
    assert rd["builder"]["version"]["kernel"] == os.uname().release
    assert rd["byproducts"][0]["annotations"]["verdict"] == "identical"
    v = verify_attestation(envelope, [public], derivation_id=record.derivation_id,
                           rebuilt_sha256=record.output.sha256)
    assert (v.verdict, v.key_id, v.derivation_id) == ("identical", public.key_id, record.derivation_id)
    shown = world.cli("attestation", "tiny")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().encode() == envelope


def _shared_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="wheelproof-two-builders-"))
    d.chmod(0o755)
    return d


def _builder_b(shared: Path, world, *names: str) -> subprocess.CompletedProcess[str]:
    """Builder B: user nobody, umask 077, its own TMPDIR, HOME, store and key.

    Our interpreter lives under /root (mode 0700), so B runs in a private mount namespace where /root is
    a tmpfs holding only a bind of ~/.pyenv: nobody can reach the interpreter and nothing else of root's."""
    b = shared / "b"
    pyenv = Path(sys.base_prefix).resolve()
    assert pyenv.is_relative_to("/root/.pyenv") or not pyenv.is_relative_to("/root"), pyenv
    hide = (f"mount --bind /root/.pyenv {b / 'pyenv'} && mount -t tmpfs -o mode=0755,size=1m tmpfs /root && "
            f"mkdir /root/.pyenv && mount --bind {b / 'pyenv'} /root/.pyenv && umount -l {b / 'pyenv'} && "
            if pyenv.is_relative_to("/root") else "")
    (b / "pyenv").mkdir(exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(b), "TMPDIR": str(b / "tmp"),
           "WHEELPROOF_STORE": str(b / "store"), "WHEELPROOF_DECLARATIONS": str(shared / "declarations"),
           "WHEELPROOF_BUILDER_KEY": str(b / "builder.key"), "WHEELPROOF_ALLOW_LOOPBACK": "1"}
    script = (f'{hide}umask 077 && cd / && exec setpriv --reuid 65534 --regid 65534 --clear-groups '
              f'{REPO / ".venv" / "bin" / "python"} -m pipeline "$@"')
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *names]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/")


@needs_bwrap
@pytest.mark.integration
def test_two_builders_challenge_and_enforcement(world, _builder_key, tmp_path):
    world.declare_tiny("det", "1.0")
    world.declare_tiny("leaky", "1.0", hook=LEAKY_HOOK)
    shutil.copy(REPO / "declarations" / "environments.toml", world.declarations / "environments.toml")
    shared = _shared_dir()
    try:
        shutil.copytree(world.declarations, shared / "declarations")
        (shared / "b" / "tmp").mkdir(parents=True)
        os.chown(shared / "b", 65534, 65534)
        os.chown(shared / "b" / "tmp", 65534, 65534)
        # builder A: this interpreter, root, umask 022, the world's store
        a = world.doit("build:det", "build:leaky")
        assert a.returncode == 0, a.stderr + a.stdout
        b = _builder_b(shared, world, "build", "det", "leaky")
        assert b.returncode == 0, b.stderr + b.stdout
        key_b = _builder_b(shared, world, "builder-key", "--public")
        assert key_b.returncode == 0, key_b.stderr
        trusted = tmp_path / "trusted.pem"
        key_a = world.cli("builder-key", "--public")
        trusted.write_text(key_a.stdout + key_b.stdout)
        ch = world.cli("challenge", "--from", str(world.store_root), "--from", str(shared / "b" / "store"),
                       "--trusted-keys", str(trusted))
        print(ch.stdout)
        assert ch.returncode == 1, ch.stderr  # leaky differs between the builders
        assert "det 1.0" in ch.stdout and "leaky 1.0" in ch.stdout
        det_block = ch.stdout.split("det 1.0")[1].split("leaky 1.0")[0]
        assert "\n  identical" in det_block
        leaky_block = ch.stdout.split("leaky 1.0")[1]
        assert "\n  differ" in leaky_block and "    leaky_where.py" in leaky_block
        assert "/b/tmp/wheelproof-" in leaky_block  # the diff shows B's build path
        assert "2 derivations: 1 identical, 1 differ, 0 inconclusive" in ch.stdout
        report = json.loads(world.cli("challenge", "det", "--from", str(world.store_root), "--from",
                                      str(shared / "b" / "store"), "--trusted-keys", str(trusted), "--json").stdout)
        assert [d["status"] for d in report["derivations"]] == ["identical"]
        assert len({b["key_id"] for b in report["derivations"][0]["builders"]}) == 2
        # B exports; A imports; a snapshot needing 2 trusted builders publishes det with both envelopes
        export = shared / "export"
        ex = _builder_b(shared, world, "export-attestations", str(shared / "b" / "export"))
        assert ex.returncode == 0, ex.stderr
        shutil.copytree(shared / "b" / "export", export)
        ch2 = world.cli("challenge", "leaky", "--from", str(world.store_root), "--from", str(export),
                        "--trusted-keys", str(trusted))
        assert ch2.returncode == 1 and "leaky_where.py" in ch2.stdout
        imp = world.cli("import-attestations", str(export))
        assert imp.returncode == 0, imp.stderr
        (world.declarations / "le" / "leaky.toml").unlink()  # it differs from upstream: not publishable
        only_a = tmp_path / "only-a.pem"
        only_a.write_text(key_a.stdout)
        refused = world.doit("snapshot", "--require-attestations", "2", "--trusted-keys", str(only_a))
        print(refused.stderr)
        assert refused.returncode != 0
        assert "de/det.toml: 1 of 2 required trusted builders attest" in refused.stderr
        snap = world.doit("snapshot", "--require-attestations", "2", "--trusted-keys", str(trusted))
        assert snap.returncode == 0, snap.stderr + snap.stdout
        print(snap.stdout)
        assert "every project attested by 2 of 2 trusted builders" in snap.stdout
        root = snap.stdout.split("root CID ")[1].split()[0]
        ch3 = world.cli("challenge", "--from", root, "--trusted-keys", str(trusted), "--json")
        assert ch3.returncode == 0, ch3.stderr
        assert [d["status"] for d in json.loads(ch3.stdout)["derivations"]] == ["identical"]
    finally:
        shutil.rmtree(shared, ignore_errors=True)
