"""An HTTP(S) opener that goes only where ``pipeline.model.urlpolicy`` allows.

* Only ``http``/``https`` handlers are installed (no ``file:``, ``ftp:``, ``data:``), and no proxy:
  a proxy would resolve host names itself, out of reach of the address check.
* Every connection resolves its host once, refuses it if any address is not public
  (``address_problem``: loopback only with the opt-in), and connects to exactly the checked
  addresses, so a DNS answer cannot change between the check and the connection.
* Every redirect (RFC 9110 section 15.4; 301/302/303/307/308) is checked against the URL policy
  before urllib follows it; urllib's own limit on the number of redirects stays.
"""

from __future__ import annotations

import http.client
import socket
import urllib.parse
import urllib.request
from typing import IO, Any

from pipeline.model.errors import FetchError
from pipeline.model.urlpolicy import address_problem, url_problem

__all__ = ["GuardedRedirects", "RefusedURL", "open_guarded", "shown"]


class RefusedURL(FetchError):
    """The policy refuses a URL, a redirect or an address: final, never retried."""


def shown(url: str, limit: int = 200) -> str:
    """A server-chosen URL made safe to print: escaped, shortened."""
    text = url.encode("ascii", "backslashreplace").decode()
    text = "".join(c if 0x20 <= ord(c) < 0x7F else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= limit else text[:limit] + "…"


def _checked_connection(address: tuple[str, int], timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
                        source_address: tuple[str, int] | None = None) -> socket.socket:
    """``socket.create_connection``, but only to addresses the policy allows."""
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise OSError(f"cannot resolve {host}: {e.strerror}") from None
    for *_, sockaddr in infos:
        if problem := address_problem(str(sockaddr[0])):
            raise RefusedURL(f"refused: {host} is a {problem}" if host == sockaddr[0]
                             else f"refused: {host} resolves to a {problem}")
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            sock.close()
            last = e
    raise last or OSError(f"no address for {host}")


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._create_connection = _checked_connection  # the hook HTTPConnection.connect() calls


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._create_connection = _checked_connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_GuardedHTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_GuardedHTTPSConnection, req, context=self._context)  # type: ignore[attr-defined]


class GuardedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the policy allows (checked before urllib's own checks)."""

    def _check(self, target: str) -> None:
        problem = url_problem(target)
        host = urllib.parse.urlsplit(target).hostname if problem is None else None
        if host is not None:
            try:
                problem = address_problem(host)  # an address literal is refused before connecting
            except ValueError:
                pass  # a name: its addresses are checked when connecting
        if problem:
            raise RefusedURL(f"redirect refused: to {shown(target)}: {problem}")

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes] | None, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        self._check(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]

    def http_error_302(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                       headers: Any) -> Any:
        location = headers.get("location") or headers.get("uri")
        if location is not None:
            self._check(urllib.parse.urljoin(req.full_url, location))
        return super().http_error_302(req, fp, code, msg, headers)  # type: ignore[arg-type]

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302  # type: ignore[assignment]


def open_guarded(request: urllib.request.Request, timeout: float) -> http.client.HTTPResponse:
    """Open ``request`` (already checked against the URL policy) through the guarded handlers."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler({}), urllib.request.UnknownHandler(), _HTTPHandler(),
                    _HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(), GuardedRedirects(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener.open(request, timeout=timeout)  # type: ignore[no-any-return]
