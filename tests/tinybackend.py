"""A tiny PEP 517 backend the tests pack into sdists (no build inputs needed).

It reads tiny.json (name, version, files) beside it, runs hook.py first if
present (to misbehave on purpose), and writes a deterministic wheel whose zip
timestamps come from SOURCE_DATE_EPOCH.
"""

import base64
import hashlib
import json
import os
import pathlib
import time
import zipfile

HERE = pathlib.Path(__file__).parent


def _spec():
    return json.loads((HERE / "tiny.json").read_text())


def get_requires_for_build_wheel(config_settings=None):
    return _spec().get("dynamic_requires", [])


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    hook = HERE / "hook.py"
    if hook.exists():
        exec(compile(hook.read_text(), str(hook), "exec"), {"__name__": "hook", "__file__": str(hook)})
    spec = _spec()
    name, version = spec["name"], spec["version"]
    dist = f"{name.replace('-', '_')}-{version}"
    files = dict(spec.get("files", {}))
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Python: {spec['requires_python']}"] if spec.get("requires_python") else []
    meta += [f"Provides-Extra: {e}" for e in spec.get("extras", [])]
    meta += [f"Requires-Dist: {d}" for d in spec.get("dependencies", [])]
    files[f"{dist}.dist-info/METADATA"] = "\n".join(meta) + "\n"
    tag = spec.get("tag", "py3-none-any")   # e.g. py3-none-manylinux_2_17_x86_64: a wheel for one platform
    files[f"{dist}.dist-info/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: tinybackend 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n")
    record = []
    for arcname, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{arcname},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    when = time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH", "315532800")))[:6]
    filename = f"{dist}-{tag}.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, text in files.items():
            info = zipfile.ZipInfo(arcname, date_time=when)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
    return filename
