"""A local, verifying proxy in front of an untrusted IPFS gateway, for pip and uv.

The release manifest (``docs/releases.md``) is accepted only with a valid signature by the trusted key;
its root CID is then the only tree served, at ``/simple/…`` (and ``/ipfs/<root>/…``). Every block is
fetched as a trustless raw block (https://specs.ipfs.tech/http-gateways/trustless-gateway/) and
accepted only if it hashes to its CID (:class:`pipeline.client.source.GatewayBlocks`), so an altered,
substituted or stale answer fails the request (HTTP 502 with the reason) instead of reaching the
installer. Paths, PEP 691 negotiation, ranges and caching headers are the local gateway's
(:mod:`pipeline.export.ipfs.gateway`).
"""

from __future__ import annotations

import urllib.parse
from http import HTTPStatus
from pathlib import Path

from pipeline.client.source import GatewayBlocks, Release, load_release
from pipeline.export.ipfs.gateway import GatewayHandler, GatewayServer
from pipeline.export.ipfs.multiformats import CID, CIDError
from pipeline.model.errors import StoreError

__all__ = ["ProxyHandler", "ProxyServer", "serve_proxy"]


class ProxyServer(GatewayServer):
    verbose = False

    def __init__(self, address: tuple[str, int], upstream: str, release: Release, max_concurrency: int = 16):
        known = {}
        if release.previous_root:
            try:
                known[CID.parse(release.previous_root).hex_digest] = (
                    f"release {release.sequence - 1}'s root {release.previous_root}")
            except CIDError:
                pass
        self.release = release
        self.blocks = GatewayBlocks(upstream, known=known)
        super().__init__(address, self.blocks, max_concurrency)
        self.RequestHandlerClass = ProxyHandler


class ProxyHandler(GatewayHandler):
    server: ProxyServer
    server_version = "wheelproof-proxy/0.1"

    def _handle(self, head: bool) -> None:
        root = self.server.release.root
        parsed = urllib.parse.urlsplit(self.path)
        parts = parsed.path.split("/")
        if len(parts) > 2 and parts[1] == "ipfs":
            if parts[2] != str(root):
                return self._error(HTTPStatus.FORBIDDEN, f"{parts[2]} is not the root of release "
                                   f"{self.server.release.sequence} ({root}): this proxy serves only that", head)
        elif parsed.path in ("", "/"):
            self.path = f"/ipfs/{root}/" + (f"?{parsed.query}" if parsed.query else "")
        else:
            self.path = f"/ipfs/{root}{self.path}"
        super()._handle(head)

    def _error(self, status: HTTPStatus, message: str, head: bool) -> None:
        if "refusing to serve a corrupt block" in message or "the gateway" in message:
            status = HTTPStatus.BAD_GATEWAY  # the upstream lied or failed; we did not
        self.log_error("%s %s", status.value, message)
        super()._error(status, message, head)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)

    def log_error(self, format: str, *args: object) -> None:  # noqa: A002
        import sys

        print("proxy: " + (format % args), file=sys.stderr, flush=True)


def serve_proxy(upstream: str, manifest: Path, trusted_key: Path, host: str = "127.0.0.1", port: int = 8081) -> None:
    release = load_release(manifest, trusted_key)
    server = ProxyServer((host, port), upstream, release)
    url = f"http://{host}:{server.server_address[1]}/simple/"
    print(f"proxy: release {release.sequence} {release.root} (signature verified) from {upstream}", flush=True)
    print(f"proxy: pip install --index-url {url} NAME   |   uv pip install --index-url {url} NAME", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    except StoreError as e:
        print(f"proxy: {e}", flush=True)
    finally:
        server.server_close()
