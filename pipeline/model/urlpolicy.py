"""Which URLs a declaration may name and which addresses a fetch may connect to.

URLs (RFC 3986, split by ``urllib.parse.urlsplit``) must be ``https`` with a host and no userinfo,
printable ASCII without whitespace. Plain ``http`` or ``https`` to ``localhost``/``127.0.0.1``/
``[::1]`` is allowed only when ``WHEELPROOF_ALLOW_LOOPBACK=1`` (the tests serve fixtures there).

Addresses (``ipaddress``; IANA special-purpose registries, RFC 6890): a fetch never connects to
a place inside this machine or its network: unspecified, loopback (only with the opt-in),
link-local (RFC 3927, RFC 4291: cloud metadata services live there), multicast, reserved, and
private networks (RFC 1918, RFC 6598 shared space, RFC 4193 unique-local, site-local, 0.0.0.0/8).
Documentation and benchmarking ranges (RFC 5737, RFC 2544) are not refused: some networks answer
public names with them (a filtering resolver), and they reach nothing of ours. Loading a
declaration checks the URL text; fetching checks the URL again, every redirect target, and the
addresses the host name resolves to.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from typing import Final

__all__ = ["ALLOW_LOOPBACK_ENV", "LOOPBACK_HOSTS", "address_problem", "loopback_allowed", "url_problem"]

ALLOW_LOOPBACK_ENV = "WHEELPROOF_ALLOW_LOOPBACK"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_OPT_IN = f"{ALLOW_LOOPBACK_ENV}=1"
_PRIVATE: Final = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1122, 1918, 6598
    "fc00::/7", "fec0::/10",  # RFC 4193 unique-local, RFC 3879 (deprecated) site-local
))


def loopback_allowed() -> bool:
    """The opt-in, read at each check (tests set it per test)."""
    return os.environ.get(ALLOW_LOOPBACK_ENV) == "1"


def url_problem(url: str) -> str | None:
    """Why ``url`` may not be fetched, or None if it may."""
    if not url.isascii():
        return "has non-ASCII characters (write an IDN host in its xn-- form and percent-encode the path)"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "has a control character"
    if any(c.isspace() for c in url):
        return "has whitespace"
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as e:
        return f"is not a valid URL: {e}"
    scheme = parts.scheme.lower()
    loopback = host in LOOPBACK_HOSTS
    if scheme == "http" and loopback:
        if not loopback_allowed():
            return f"plain http is allowed only to localhost, and only with {_OPT_IN}"
    elif scheme != "https":
        return f"only https URLs may be fetched, not {scheme + ':' if scheme else 'a relative URL'}"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "must not carry a user name or password"
    if not host:
        return "has no host"
    if loopback and not loopback_allowed():
        return f"names the local machine ({host}); allowed only with {_OPT_IN}"
    return None


def address_problem(address: str) -> str | None:
    """Why a fetch may not connect to ``address`` (an IP address as text), or None if it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if loopback_allowed() else f"loopback address {ip} (allowed only with {_OPT_IN})"
    private = any(ip in net for net in _PRIVATE if net.version == ip.version)
    for kind, flag in (("unspecified", ip.is_unspecified), ("link-local", ip.is_link_local),
                       ("multicast", ip.is_multicast), ("private", private), ("reserved", ip.is_reserved)):
        if flag:
            return f"{kind} address {ip}"
    return None
