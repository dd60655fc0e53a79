"""Which setuptools releases could have written upstream's metadata (issue 14, "older setuptools").

``declare`` resolves the build requirements as of the upstream wheel's upload, but an uploader may have
built with an older setuptools than the newest on the index that day. setuptools writes the core
metadata (PKG-INFO, Core Metadata 2.1, https://packaging.python.org/en/latest/specifications/core-metadata/)
of both the sdist's egg-info and the wheel (``bdist_wheel`` converts it to METADATA, PEP 427), and
some of what it writes changed at known releases (read in pypa/setuptools' history):

- ``Platform: UNKNOWN`` for an unset field, and two newlines after the long description
  (``"\\n%s\\n\\n"``), until 62.2.0 (commit 1cfa27c0, "prevent UNKNOWN vals ... an extra newline").
- The long description as a ``Description:`` header instead of the message body, and no
  ``License-File`` field, until 57.0.0 (badfe739, "Write long description in message payload";
  3544de73, "Add License-File field to package metadata").
- ``egg_info`` wrote its PKG-INFO under ``safe_name(name)``, which replaced ``_`` with ``-``, until
  69.0.3 (d0b0a4d5, "Retain valid names with underscores in egg_info"); the sdist's top-level PKG-INFO
  keeps the name as declared.

Each marker found in upstream's wheel or sdist bounds the release from above; ``declare`` adds the
tightest bound to the resolution, so it picks the newest setuptools as of the upload that writes what
upstream's did. Only metadata is read, each member bounded in size; nothing is extracted.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from packaging.version import Version

__all__ = ["MetadataEvidence", "SetuptoolsBound", "infer_setuptools_bounds", "read_metadata_evidence",
           "tightest"]

MAX_METADATA_BYTES = 4 << 20   # a METADATA or PKG-INFO larger than this is not read (no evidence)
MAX_MEMBERS = 200_000          # sdist members looked at for the top-level PKG-INFO
# setuptools' default ``license_files`` patterns (setuptools/dist.py, since 56.0.0); wheel's own default
# before that is the same list, so a dist-info file of these names was copied as a license file.
LICENSE_NAME = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", re.I)
# ``pkg_resources.safe_name`` (setuptools < 69.0.3's egg_info name): runs of other characters become "-".
_OLD_UNSAFE = re.compile(r"[^A-Za-z0-9.]+")


@dataclass(frozen=True)
class MetadataEvidence:
    """What upstream's setuptools wrote: the wheel's METADATA and the sdist's top-level PKG-INFO."""
    metadata: str                  # the wheel's METADATA ("" when unreadable)
    dist_info_files: tuple[str, ...]  # names directly in the wheel's .dist-info directory
    pkg_info: str                  # the sdist's top-level PKG-INFO ("" when absent or unreadable)


@dataclass(frozen=True)
class SetuptoolsBound:
    """``setuptools < below``, with the evidence that calls for it."""
    below: str
    reason: str

    @property
    def requirement(self) -> str:
        return f"setuptools<{self.below}"


def _headers(text: str) -> list[tuple[str, str]]:
    return list(HeaderParser().parsestr(text).items()) if text else []


def _body(text: str) -> str:
    head, sep, body = text.partition("\n\n")
    return body if sep else ""


def infer_setuptools_bounds(evidence: MetadataEvidence) -> list[SetuptoolsBound]:
    """Every upper bound on upstream's setuptools release the evidence shows, each with its reason."""
    out: list[SetuptoolsBound] = []
    headers = _headers(evidence.metadata)
    fields = {k.lower() for k, _ in headers}
    if ("platform", "UNKNOWN") in {(k.lower(), v.strip()) for k, v in headers}:
        out.append(SetuptoolsBound("62.2", "METADATA has 'Platform: UNKNOWN', a placeholder setuptools < 62.2 wrote"))
    body = _body(evidence.metadata)
    if body.strip() and body.endswith("\n\n\n"):
        out.append(SetuptoolsBound("62.2", "METADATA's description ends with two blank lines, which setuptools "
                                           "< 62.2 appended"))
    sdist_headers = _headers(evidence.pkg_info)
    if any(k.lower() == "description" for k, _ in sdist_headers):
        out.append(SetuptoolsBound("57", "the sdist's PKG-INFO carries the long description as a Description "
                                         "header, which setuptools < 57 wrote"))
    licenses = [n for n in evidence.dist_info_files if LICENSE_NAME.match(n)]
    if evidence.metadata and licenses and "license-file" not in fields:
        out.append(SetuptoolsBound("57", f"METADATA has no License-File though the wheel carries {licenses[0]}: "
                                         "setuptools < 57 did not write the field"))
    name = next((v.strip() for k, v in headers if k.lower() == "name"), "")
    declared = next((v.strip() for k, v in sdist_headers if k.lower() == "name"), "")
    if declared and name != declared and name == _OLD_UNSAFE.sub("-", declared):
        out.append(SetuptoolsBound("69.0.3", f"METADATA says Name: {name} where the sdist's PKG-INFO says "
                                             f"{declared}: egg_info of setuptools < 69.0.3 replaced '_' with '-'"))
    return out


def tightest(bounds: list[SetuptoolsBound]) -> list[SetuptoolsBound]:
    """The bounds at the lowest release (the others follow from it), in their order."""
    if not bounds:
        return []
    low = min(Version(b.below) for b in bounds)
    return [b for b in bounds if Version(b.below) == low]


def _read_member(read: bytes | None) -> str:
    if read is None or len(read) > MAX_METADATA_BYTES:
        return ""
    return read.decode("utf-8", errors="replace")


def read_metadata_evidence(wheel: Path, sdist: Path, sdist_filename: str) -> MetadataEvidence:
    """The evidence from an upstream wheel and its sdist (``sdist_filename``: its real name), each member
    read only if it is a regular file no larger than ``MAX_METADATA_BYTES``."""
    metadata, dist_info = "", []
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            top, _, rest = info.filename.partition("/")
            if not top.endswith(".dist-info") or not rest or "/" in rest or info.is_dir():
                continue
            dist_info.append(rest)
            if rest == "METADATA" and info.file_size <= MAX_METADATA_BYTES:
                metadata = _read_member(zf.read(info))
    pkg_info = ""
    if sdist_filename.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(sdist, "r:*") as tf:
            for count, member in enumerate(tf):
                if count >= MAX_MEMBERS:
                    break
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] == "PKG-INFO" and member.isreg() and member.size <= MAX_METADATA_BYTES:
                    f = tf.extractfile(member)
                    pkg_info = _read_member(f.read(MAX_METADATA_BYTES + 1) if f else None)
                    break
    elif sdist_filename.endswith(".zip"):
        with zipfile.ZipFile(sdist) as zf:
            for info in zf.infolist():
                parts = info.filename.split("/")
                if len(parts) == 2 and parts[1] == "PKG-INFO" and info.file_size <= MAX_METADATA_BYTES:
                    with zf.open(info) as f:
                        pkg_info = _read_member(f.read(MAX_METADATA_BYTES + 1))
                    break
    return MetadataEvidence(metadata, tuple(dist_info), pkg_info)
