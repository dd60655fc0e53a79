"""Fixed-output fetch: a download enters the store only if it matches its pin.

Network errors, timeouts, 5xx answers and truncated bodies are retried a bounded
number of times; a 4xx answer, an empty body, or full-length bytes with the
wrong hash are final. Inputs already stored are never downloaded again, so a
re-run works offline (``WHEELPROOF_OFFLINE=1`` makes any download an error).
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from pipeline.model.declaration import Artifact
from pipeline.model.errors import FetchError, IntegrityError
from pipeline.store.local import Store

USER_AGENT = "wheelproof/0.1 (+fixed-output fetch)"
OFFLINE_ENV = "WHEELPROOF_OFFLINE"


class _Final(Exception):
    """A failure that retrying cannot fix."""


def _download_once(store: Store, artifact: Artifact, timeout: float) -> str:
    request = urllib.request.Request(artifact.url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response, store.writer() as pending:
        while chunk := response.read(1 << 16):
            pending.write(chunk)
            if artifact.size is not None and pending.size > artifact.size:
                raise _Final(f"body is longer than the pinned size {artifact.size}")
        if pending.size == 0:
            raise _Final("empty body")
        if artifact.size is not None and pending.size < artifact.size:
            # a short body with no error is a truncated transfer: worth a retry
            raise ConnectionError(f"truncated body: {pending.size} of {artifact.size} bytes")
        try:
            return pending.commit(expected_sha256=artifact.sha256, expected_size=artifact.size)
        except IntegrityError as e:
            raise _Final(f"content does not match the pin: {e}") from None


def fetch(store: Store, artifact: Artifact, *, what: str, retries: int = 3, timeout: float = 60.0,
          backoff: float = 1.0, log: Callable[[str], None] | None = None) -> str:
    """Make ``artifact`` present in ``store`` and return its digest.

    ``what`` names the declaration (and field) for error messages.
    """
    if store.has(artifact.sha256):
        store.verified_path(artifact.sha256)
        return artifact.sha256
    if os.environ.get(OFFLINE_ENV):
        raise FetchError(f"{what}: {artifact.url} is not in the store and {OFFLINE_ENV} is set")
    last = ""
    for attempt in range(1, retries + 1):
        try:
            if log:
                log(f"fetch {artifact.filename} ({attempt}/{retries})")
            return _download_once(store, artifact, timeout)
        except _Final as e:
            raise FetchError(f"{what}: {artifact.url}: {e}") from None
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500:
                raise FetchError(f"{what}: {artifact.url}: HTTP {e.code} {e.reason}") from None
            last = f"HTTP {e.code} {e.reason}"
        except TimeoutError:
            last = f"timed out after {timeout:g}s"
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, OSError) as e:
            last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if attempt < retries:
            time.sleep(backoff * 2 ** (attempt - 1))
    raise FetchError(f"{what}: {artifact.url}: {last} (gave up after {retries} attempts)")
