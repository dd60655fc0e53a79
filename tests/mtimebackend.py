"""A PEP 517 backend that stamps members as setuptools and flit do without SOURCE_DATE_EPOCH.

Modules are zipped from their files (``ZipInfo.from_file``: the file's mtime in local time and its
mode); ``top_level.txt`` and then METADATA are written to disk and zipped from there (the kernel's
stamps; METADATA's read with ``os.fstat`` on the open file, as ``wheel`` does); RECORD gets the clock.
Upstream "built at" a clock is simulated with MTIMEBACKEND_CLOCK (epoch seconds; ``top_level.txt``
was written MTIMEBACKEND_EARLIER seconds before), and "built on Windows" with MTIMEBACKEND_AS_WINDOWS
(CRLF text, zip host 0, mode 0666: what CPython gives there); rebuilds never set them.
"""

import json
import os
import pathlib
import time
import zipfile

HERE = pathlib.Path(__file__).parent


def get_requires_for_build_wheel(config_settings=None):
    return []


def _as_windows(info, stat_mode=True):
    if os.environ.get("MTIMEBACKEND_AS_WINDOWS"):
        info.create_system = 0
        if stat_mode:
            info.external_attr = 0o100666 << 16
    return info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    spec = json.loads((HERE / "tiny.json").read_text())
    dist = f"{spec['name'].replace('-', '_')}-{spec['version']}"
    clock = os.environ.get("MTIMEBACKEND_CLOCK")
    now = float(clock) if clock else time.time()
    newline = "\r\n" if os.environ.get("MTIMEBACKEND_AS_WINDOWS") else None
    build = HERE / "build"
    build.mkdir(exist_ok=True)
    top_level = build / "top_level.txt"
    top_level.write_text("pkg_a\npkg_b\npkg_c\n", newline=newline)
    generated = build / "METADATA"
    generated.write_text(f"Metadata-Version: 2.1\nName: {spec['name']}\nVersion: {spec['version']}\n",
                         newline=newline)
    if clock:
        earlier = now - float(os.environ.get("MTIMEBACKEND_EARLIER", "0"))
        os.utime(top_level, (earlier, earlier))
        os.utime(generated, (now, now))
    filename = f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as zf:
        for path, arcname in [*((HERE / rel, rel) for rel in sorted(spec["files"])),
                              (top_level, f"{dist}.dist-info/top_level.txt")]:
            info = _as_windows(zipfile.ZipInfo.from_file(path, arcname))
            zf.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
        with open(generated, "rb") as f:
            st = os.fstat(f.fileno())
            info = zipfile.ZipInfo(f"{dist}.dist-info/METADATA", time.localtime(st.st_mtime)[:6])
            info.external_attr = (st.st_mode & 0xFFFF) << 16
            zf.writestr(_as_windows(info), f.read(), zipfile.ZIP_DEFLATED)
        record = zipfile.ZipInfo(f"{dist}.dist-info/RECORD", time.localtime(now)[:6])
        record.external_attr = 0o644 << 16
        zf.writestr(_as_windows(record, stat_mode=False), "", zipfile.ZIP_DEFLATED)
    return filename
