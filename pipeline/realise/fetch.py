"""Fixed-output fetch: a download enters the store only if it matches its pin.

Network errors, timeouts, 5xx answers and truncated bodies are retried a bounded
number of times; a 4xx answer, an empty body, or full-length bytes with the
wrong hash are final. Inputs already stored are never downloaded again, so a
re-run works offline (``WHEELPROOF_OFFLINE=1`` makes any download an error).

The URL policy of the declarations is applied again here (defence in depth), redirects go
only where it allows and connections only to public addresses (``guarded_http``), and a body
is cut off as soon as it is longer than its pinned size (or the size cap, for the unsized
artifacts ``declare`` handles). Errors name the URL and the pin, never the bytes received.
"""

from __future__ import annotations

import http
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from pipeline.model import limits
from pipeline.model.declaration import Artifact
from pipeline.model.errors import FetchError, IntegrityError
from pipeline.model.urlpolicy import url_problem
from pipeline.realise.guarded_http import RefusedURL, open_guarded
from pipeline.store.local import Store

USER_AGENT = "wheelproof/0.1 (+fixed-output fetch)"
OFFLINE_ENV = "WHEELPROOF_OFFLINE"


class _Final(Exception):
    """A failure that retrying cannot fix."""


def _download_once(store: Store, artifact: Artifact, timeout: float) -> str:
    if artifact.size is not None:
        limit, bound = artifact.size, f"the pinned size {artifact.size}"
    else:
        limit, bound = limits.MAX_ARTIFACT_SIZE, f"the size limit {limits.MAX_ARTIFACT_SIZE}"
    request = urllib.request.Request(artifact.url, headers={"User-Agent": USER_AGENT})
    with open_guarded(request, timeout) as response:
        announced = response.headers.get("Content-Length", "")
        if announced.isdigit() and int(announced) > limit:
            raise _Final(f"body is longer than {bound} (announced before any byte was read)")
        with store.writer() as pending:
            # never read more than one byte past the limit
            while chunk := response.read(min(1 << 16, limit + 1 - pending.size)):
                pending.write(chunk)
                if pending.size > limit:
                    raise _Final(f"body is longer than {bound}; download stopped")
            if pending.size == 0:
                raise _Final("empty body")
            if artifact.size is not None and pending.size < artifact.size:
                # a short body with no error is a truncated transfer: worth a retry
                raise ConnectionError(f"truncated body: shorter than the pinned size {artifact.size}")
            try:
                return pending.commit(expected_sha256=artifact.sha256, expected_size=artifact.size)
            except IntegrityError:
                raise _Final(f"content does not match the pinned sha256 {artifact.sha256}") from None


def fetch(store: Store, artifact: Artifact, *, what: str, retries: int = 3, timeout: float = 60.0,
          backoff: float = 1.0, log: Callable[[str], None] | None = None) -> str:
    """Make ``artifact`` present in ``store`` and return its digest.

    ``what`` names the declaration (and field) for error messages.
    """
    if store.has(artifact.sha256):
        store.verified_path(artifact.sha256)
        return artifact.sha256
    if problem := url_problem(artifact.url):
        raise FetchError(f"{what}: {artifact.url!r}: refused: {problem}")
    if os.environ.get(OFFLINE_ENV):
        raise FetchError(f"{what}: {artifact.url} is not in the store and {OFFLINE_ENV} is set")
    last = ""
    for attempt in range(1, retries + 1):
        try:
            if log:
                log(f"fetch {artifact.filename} ({attempt}/{retries})")
            return _download_once(store, artifact, timeout)
        except (_Final, RefusedURL) as e:
            raise FetchError(f"{what}: {artifact.url}: {e}") from None
        except urllib.error.HTTPError as e:
            status = f"HTTP {e.code} {_phrase(e.code)}".rstrip()  # not the server's own words
            if 400 <= e.code < 500:
                raise FetchError(f"{what}: {artifact.url}: {status}") from None
            last = status
        except TimeoutError:
            last = f"timed out after {timeout:g}s"
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, OSError) as e:
            last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if attempt < retries:
            time.sleep(backoff * 2 ** (attempt - 1))
    raise FetchError(f"{what}: {artifact.url}: {last} (gave up after {retries} attempts)")


def _phrase(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return ""
