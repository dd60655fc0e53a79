"""A PEP 517 backend that stamps members as setuptools and flit do without SOURCE_DATE_EPOCH.

Modules are zipped from their files (``ZipInfo.from_file``: the file's mtime in local time); METADATA
is written to disk first and zipped from there (the kernel's stamp); RECORD gets the clock. Upstream
"built at" a clock is simulated with MTIMEBACKEND_CLOCK (epoch seconds); rebuilds never set it.
"""

import json
import os
import pathlib
import time
import zipfile

HERE = pathlib.Path(__file__).parent


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    spec = json.loads((HERE / "tiny.json").read_text())
    dist = f"{spec['name'].replace('-', '_')}-{spec['version']}"
    clock = os.environ.get("MTIMEBACKEND_CLOCK")
    now = float(clock) if clock else time.time()
    generated = HERE / "build" / "METADATA"
    generated.parent.mkdir(exist_ok=True)
    generated.write_text(f"Metadata-Version: 2.1\nName: {spec['name']}\nVersion: {spec['version']}\n")
    if clock:
        os.utime(generated, (now, now))
    filename = f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in sorted(spec["files"]):
            zf.write(HERE / rel, rel)
        zf.write(generated, f"{dist}.dist-info/METADATA")
        record = zipfile.ZipInfo(f"{dist}.dist-info/RECORD", time.localtime(now)[:6])
        record.external_attr = 0o644 << 16
        zf.writestr(record, "", zipfile.ZIP_DEFLATED)
    return filename
