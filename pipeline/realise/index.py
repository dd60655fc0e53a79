"""A read-only client for a PEP 691 (JSON) / PEP 503 (HTML) simple repository.

File URLs may be relative; they are resolved against the page URL (PEP 503).
Yanked files (PEP 592) are skipped unless pinned exactly.
"""

from __future__ import annotations

import html.parser
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from pipeline.model.errors import IndexError_

DEFAULT_INDEX = os.environ.get("WHEELPROOF_INDEX_URL", "https://pypi.org/simple/")
ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str | None
    size: int | None
    requires_python: str | None
    yanked: bool
    core_metadata: bool
    upload_time: str | None = None


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))


def _get(url: str, accept: str = "*/*", timeout: float = 60) -> tuple[bytes, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "wheelproof/0.1"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read(), r.headers.get("Content-Type", ""), r.geturl()
    except urllib.error.HTTPError as e:
        raise IndexError_(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise IndexError_(f"{url}: {e}") from None


class SimpleIndex:
    def __init__(self, base_url: str = DEFAULT_INDEX):
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._cache: dict[str, list[IndexFile]] = {}

    def files(self, project: str) -> list[IndexFile]:
        name = canonicalize_name(project)
        if name in self._cache:
            return self._cache[name]
        page = urllib.parse.urljoin(self.base_url, f"{name}/")
        body, ctype, final_url = _get(page, ACCEPT)
        files = self._parse_json(body, final_url) if "json" in ctype else self._parse_html(body, final_url)
        self._cache[name] = files
        return files

    @staticmethod
    def _parse_json(body: bytes, page: str) -> list[IndexFile]:
        out = []
        for f in json.loads(body)["files"]:
            meta = f.get("core-metadata", f.get("data-dist-info-metadata", False))
            out.append(IndexFile(
                f["filename"], urllib.parse.urljoin(page, f["url"]), f.get("hashes", {}).get("sha256"),
                f.get("size"), f.get("requires-python"), bool(f.get("yanked", False)), bool(meta),
                f.get("upload-time")))
        return out

    @staticmethod
    def _parse_html(body: bytes, page: str) -> list[IndexFile]:
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        out = []
        for a in parser.links:
            href = a.get("href") or ""
            url, _, frag = urllib.parse.urljoin(page, href).partition("#")
            sha = frag.split("=", 1)[1] if frag.startswith("sha256=") else None
            filename = urllib.parse.unquote(url.rsplit("/", 1)[-1])
            meta = a.get("data-core-metadata") or a.get("data-dist-info-metadata")
            out.append(IndexFile(filename, url, sha, None, a.get("data-requires-python"),
                                 "data-yanked" in a, bool(meta)))
        return out

    def file(self, project: str, filename: str) -> IndexFile:
        for f in self.files(project):
            if f.filename == filename:
                return f
        raise IndexError_(f"{filename} is not on the index page of {project}")

    def core_metadata(self, f: IndexFile) -> bytes | None:
        """PEP 658 metadata of a wheel, if the index serves it."""
        if not f.core_metadata:
            return None
        body, _, _ = _get(f.url + ".metadata")
        return body

    def download(self, url: str) -> bytes:
        return _get(url)[0]
