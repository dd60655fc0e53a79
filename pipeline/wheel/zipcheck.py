"""Check that a file from the sandbox is a sane wheel archive before the host opens it for real.

A wheel is a zip file (PEP 427; APPNOTE.TXT, the ZIP File Format Specification, sections 4.3.7
"local file header" and 4.3.12 "central directory header"). Readers disagree when the two headers
disagree, so the local header of every member must name the same file, with the same compression
method and flags, as its central directory entry. Member names must be relative POSIX paths without
``..``, unique, and the members must decompress (their CRC-32 checked) within the size caps and a sane
compression ratio. Reading stops as soon as a cap is passed, so a decompression bomb costs no more than
the cap.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pipeline.model.errors import WheelproofError

__all__ = ["ZipCaps", "ZipCheckError", "check_wheel_zip", "local_header_problems"]

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # APPNOTE 4.3.7
_LOCAL_SIGNATURE = b"PK\x03\x04"
_CHUNK = 1 << 16


class ZipCheckError(WheelproofError):
    """The archive is not a zip a wheel may be."""


@dataclass(frozen=True)
class ZipCaps:
    members: int = 100_000
    unpacked: int = 2 << 30          # all members, uncompressed
    ratio: int = 200                 # uncompressed / compressed, for members over ratio_floor
    ratio_floor: int = 1 << 20


def _check_name(name: str, seen: set[str], where: str) -> None:
    if not name or "\0" in name or "\\" in name:
        raise ZipCheckError(f"{where}: member name {name!r} is empty or holds NUL or a backslash")
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":"):
        raise ZipCheckError(f"{where}: member name {name!r} is absolute or climbs out with '..'")
    if name in seen:
        raise ZipCheckError(f"{where}: member {name!r} appears twice")
    seen.add(name)


def _check_local_header(f: BinaryIO, info: zipfile.ZipInfo, where: str) -> tuple[int, ...]:
    f.seek(info.header_offset)
    raw = f.read(_LOCAL.size)
    if len(raw) != _LOCAL.size:
        raise ZipCheckError(f"{where}: member {info.filename!r}: local header is cut off")
    fields = _LOCAL.unpack(raw)
    sig, _, flags, method, _, _, crc, csize, usize, name_len, _ = fields
    name = f.read(name_len)
    if sig != _LOCAL_SIGNATURE:
        raise ZipCheckError(f"{where}: member {info.filename!r}: no local header at offset {info.header_offset}")
    decoded = name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
    if decoded != info.orig_filename:
        raise ZipCheckError(f"{where}: member {info.filename!r}: its local header names {decoded!r}")
    if method != info.compress_type or (flags & 0x800) != (info.flag_bits & 0x800):
        raise ZipCheckError(f"{where}: member {info.filename!r}: local header and central directory disagree "
                            "on compression method or flags")
    if not flags & 0x08 and (crc, csize, usize) != (info.CRC, info.compress_size, info.file_size) \
            and 0xFFFFFFFF not in (csize, usize):
        raise ZipCheckError(f"{where}: member {info.filename!r}: local header and central directory disagree "
                            "on CRC or sizes")
    return fields


def _dos_stamp(date_time: tuple[int, ...]) -> tuple[int, int]:
    y, mo, d, h, mi, sec = date_time
    return (h << 11) | (mi << 5) | (sec // 2), ((y - 1980) << 9) | (mo << 5) | d


def local_header_problems(path: Path, limit: int = 20) -> list[str]:
    """Members whose local header (APPNOTE 4.3.7) disagrees with their central directory entry (4.3.12):
    name, method, flags, CRC, sizes or the DOS time stamp; at most ``limit`` lines."""
    out: list[str] = []
    with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
        for info in zf.infolist():
            try:
                fields = _check_local_header(raw, info, path.name)
                if (fields[4], fields[5]) != _dos_stamp(info.date_time):
                    out.append(f"{path.name}: member {info.filename!r}: local header and central directory "
                               "disagree on the time stamp")
            except (ZipCheckError, struct.error) as e:
                out.append(str(e))
            if len(out) >= limit:
                break
    return out


def check_wheel_zip(path: Path, caps: ZipCaps = ZipCaps(), where: str | None = None) -> None:
    """Raise :class:`ZipCheckError` naming the first problem; return if the archive is sane."""
    where = where or path.name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ZipCheckError(f"{where}: not a zip archive ({e})") from e
    with zf, open(path, "rb") as raw:
        infos = zf.infolist()
        if len(infos) > caps.members:
            raise ZipCheckError(f"{where}: {len(infos)} members, over the cap of {caps.members}")
        seen: set[str] = set()
        declared = 0
        for info in infos:
            _check_name(info.filename, seen, where)
            _check_local_header(raw, info, where)
            declared += info.file_size
            if declared > caps.unpacked:
                raise ZipCheckError(f"{where}: members declare over {caps.unpacked} bytes uncompressed")
        total = 0
        for info in infos:
            read = 0
            try:
                with zf.open(info) as member:
                    while chunk := member.read(_CHUNK):
                        read += len(chunk)
                        total += len(chunk)
                        if read > info.file_size or total > caps.unpacked:
                            raise ZipCheckError(f"{where}: member {info.filename!r} unpacks past its declared "
                                                f"size or the cap of {caps.unpacked} bytes")
                        if read > caps.ratio_floor and read > caps.ratio * max(info.compress_size, 1):
                            raise ZipCheckError(f"{where}: member {info.filename!r} compresses more than "
                                                f"{caps.ratio}:1 (a decompression bomb?)")
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError,
                    ValueError, zlib.error) as e:
                raise ZipCheckError(f"{where}: member {info.filename!r} is corrupt ({e})") from e
