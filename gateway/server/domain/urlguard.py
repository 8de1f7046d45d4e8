"""Archive-URL validation for deployments: the SSRF rules.

A deployment's ``download_url`` comes from a user and is fetched later by a deployer inside the
platform's network, so it must not name anything that only that network can reach. The rules:

- an absolute ``https`` URL (``http`` only for hosts in ``allowed_http_hosts``), printable ASCII,
  no user:password part, at most ``MAX_URL_LENGTH`` characters;
- its host, written as an address or resolved from a name, is never loopback, private, link-local
  (cloud metadata), unspecified, multicast, reserved, carrier-grade NAT, documentation or
  benchmarking, nor IPv4-mapped; NAT64, 6to4 and Teredo addresses are judged by the IPv4
  address they embed. The ranges are the explicit tables below, so the verdicts do not change
  with the Python version (``ipaddress``' own notion of "private" does);
- spellings that parsers disagree on are refused outright: numeric hosts that are not a plain
  dotted quad (``2130706433``, ``0x7f.1``, ``127.1``, ``0177.0.0.1``), trailing-dot hosts,
  percent-encoded hosts and IPv6 zone ids, backslashes;
- a host listed in ``allowed_hosts`` skips the address rules (not the syntax rules).

Everything but name resolution is pure; the resolver is passed in, so tests need no DNS.
A name that resolves to any forbidden address is refused, and so is one that does not resolve.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

# Long enough for any presigned S3 or CDN URL; short enough to keep the job and the logs small.
MAX_URL_LENGTH = 2048
# A deployment request waits on this; a name that takes longer is treated as not resolving.
RESOLVE_TIMEOUT_SECONDS = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host name -> the addresses it resolves to (as strings); raises OSError when it does not.
Resolver = Callable[[str], Awaitable[Sequence[str]]]

_Table = tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]

_PRIVATE = "a private address"
_RESERVED = "a reserved address"
_DOCUMENTATION = "a documentation address"
# The IPv4 ranges a deployer must not be sent to (IANA's special-purpose registry, RFC 6890 and
# its updates), first match wins: the more specific range comes first.
_IPV4_RANGES: _Table = tuple(
    (ipaddress.IPv4Network(cidr), reason)
    for cidr, reason in (
        ("0.0.0.0/32", "an unspecified address"),
        ("0.0.0.0/8", _PRIVATE),  # "this network"
        ("10.0.0.0/8", _PRIVATE),
        ("100.64.0.0/10", "a carrier-grade NAT address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),  # cloud metadata lives here
        ("172.16.0.0/12", _PRIVATE),
        ("192.0.0.0/24", _PRIVATE),  # IETF protocol assignments
        ("192.0.2.0/24", _DOCUMENTATION),
        ("192.88.99.0/24", _RESERVED),  # the retired 6to4 relay anycast
        ("192.168.0.0/16", _PRIVATE),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", _DOCUMENTATION),
        ("203.0.113.0/24", _DOCUMENTATION),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", _RESERVED),  # 255.255.255.255, the broadcast address, included
    )
)
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
# Only 2000::/3 is allocated for global unicast; any other IPv6 address not named below is
# reserved. The forms that embed IPv4 are judged by that address before this table is read.
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_IPV6_RANGES: _Table = tuple(
    (ipaddress.IPv6Network(cidr), reason)
    for cidr, reason in (
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("64:ff9b:1::/48", _PRIVATE),  # local-use NAT64: whatever the network behind it is
        ("::/8", _RESERVED),  # IPv4-compatible (deprecated) and unassigned; holds the line above
        ("100::/64", _RESERVED),  # discard-only
        ("2001:2::/48", "a benchmarking address"),
        ("2001::/23", _RESERVED),  # IETF protocol assignments (ORCHID and the like)
        ("2001:db8::/32", _DOCUMENTATION),
        ("3fff::/20", _DOCUMENTATION),
        ("5f00::/16", _RESERVED),  # segment routing identifiers
        ("fc00::/7", _PRIVATE),  # unique local
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", _PRIVATE),  # site-local (deprecated)
        ("ff00::/8", "a multicast address"),
    )
)
# Printable ASCII without space and backslash (WHATWG parsers read "\" as "/", others do not).
_URL_CHARS = re.compile(r"[!-\[\]-~]*")
# A last label that is all digits or 0x-hex makes WHATWG parsers read the whole host as IPv4.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True)
class UrlPolicy:
    """What the guard allows beyond the defaults; host names are compared in lower case."""

    allowed_hosts: frozenset[str] = frozenset()
    allowed_http_hosts: frozenset[str] = frozenset()

    @classmethod
    def of(cls, allowed_hosts: Collection[str], allowed_http_hosts: Collection[str]) -> UrlPolicy:
        return cls(
            frozenset(h.lower() for h in allowed_hosts),
            frozenset(h.lower() for h in allowed_http_hosts),
        )


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the syntax rules; ``address`` is set when the host is an IP literal."""

    parts: SplitResult
    host: str
    address: IPAddress | None
    allowed: bool  # the host is in allowed_hosts: the address rules do not apply


def forbidden_address(ip: IPAddress) -> str | None:
    """Why the deployer must not be sent to ``ip`` (a phrase like "a loopback address"), or None.

    Judged by the tables above only, never by ``ipaddress``' ``is_private``/``is_global``, whose
    answers change between Python versions."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _lookup(ip, _IPV4_RANGES)
    if ip.scope_id:
        return "an IPv6 address with a zone"
    if ip in _IPV4_MAPPED:
        return "an IPv4-mapped IPv6 address"
    embedded = _embedded_ipv4(ip)
    if embedded:
        # NAT64, 6to4 and Teredo lead to the IPv4 address inside, which decides.
        for address in embedded:
            reason = _lookup(address, _IPV4_RANGES)
            if reason is not None:
                return f"an IPv6 address embedding {reason}"
        return None
    reason = _lookup(ip, _IPV6_RANGES)
    if reason is None and ip not in _IPV6_GLOBAL_UNICAST:
        return "a reserved address"
    return reason


def _lookup(ip: IPAddress, table: _Table) -> str | None:
    for network, reason in table:
        if ip in network:
            return reason
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses inside a NAT64, 6to4 or Teredo address (empty for other forms).

    Teredo carries its server's address and its client's (inverted); both must pass."""
    value = int(ip)
    if ip in _NAT64:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if ip in _SIXTOFOUR:
        return [ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)]
    if ip in _TEREDO:
        server = (value >> 64) & 0xFFFFFFFF
        return [ipaddress.IPv4Address(server), ipaddress.IPv4Address(~value & 0xFFFFFFFF)]
    return []


def check_form(url: str) -> SplitResult | list[str]:
    """The rules every archive URL follows, the gateway's own included: length, characters, an
    absolute http(s) URL without user:password. The split URL, or the error messages."""
    if len(url) > MAX_URL_LENGTH:
        return [f"must be at most {MAX_URL_LENGTH} characters"]
    if not _URL_CHARS.fullmatch(url):
        return ["must be printable ASCII without spaces or backslashes (percent-encode the rest)"]
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return ["is not a valid URL"]
    if parts.scheme.lower() not in ("https", "http") or not parts.netloc:
        return ["must be an absolute https URL"]
    if "@" in parts.netloc:
        return ["must not contain a user name or password"]
    if not parts.hostname:
        return ["must name a host"]
    return parts


def check_syntax(url: str, policy: UrlPolicy) -> CheckedUrl | list[str]:
    """Apply every rule that needs no name resolution: the checked URL, or the error messages."""
    parts = check_form(url)
    if isinstance(parts, list):
        return parts
    scheme = parts.scheme.lower()
    port = parts.port
    raw_host = parts.hostname or ""
    if port == 0:
        return ["has an invalid port"]
    host = raw_host.lower()
    allowed = host in policy.allowed_hosts
    errors: list[str] = []
    if scheme == "http" and host not in policy.allowed_http_hosts:
        errors.append("must use https")
    address: IPAddress | None = None
    if parts.netloc.startswith("["):
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            errors.append("has an invalid IPv6 address")
    elif allowed:
        pass  # the operator vouched for this exact host name
    elif host.endswith("."):
        errors.append("host must not end with a dot")
    elif "%" in host:
        errors.append("host must not be percent-encoded")
    elif _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            errors.append("host is a non-standard spelling of an IP address")
    elif not _HOST_NAME.fullmatch(host):
        errors.append("host is not a valid host name")
    elif host == "localhost" or host.endswith(".localhost"):
        errors.append("host is a loopback name")
    if address is not None and not allowed:
        reason = forbidden_address(address)
        if reason is not None:
            errors.append(f"host is {reason}")
    if errors:
        return errors
    return CheckedUrl(parts, host, address, allowed)


async def system_resolver(host: str) -> Sequence[str]:
    """Resolve ``host`` with the operating system's resolver (``getaddrinfo``) without blocking."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolution_errors(host: str, resolver: Resolver) -> list[str]:
    """Resolve ``host``; messages if it does not resolve or any of its addresses is forbidden.

    Every address counts, not just the first: the deployer's resolver may pick another one. The
    messages never show the addresses (they may be internal names' answers)."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            answers = await resolver(host)
    except (OSError, TimeoutError, UnicodeError):
        return ["host could not be resolved"]
    if not answers:
        return ["host could not be resolved"]
    reasons: list[str] = []
    for answer in answers:
        try:
            ip = ipaddress.ip_address(answer.split("%", 1)[0])
        except ValueError:
            return ["host could not be resolved"]
        reason = forbidden_address(ip)
        if reason is not None and f"host resolves to {reason}" not in reasons:
            reasons.append(f"host resolves to {reason}")
    return reasons


async def check_url(url: str, policy: UrlPolicy, resolver: Resolver) -> list[str]:
    """Every reason ``url`` may not be handed to the deployer; an empty list means it may."""
    checked = check_syntax(url, policy)
    if isinstance(checked, list):
        return checked
    if checked.allowed or checked.address is not None:
        return []
    return await resolution_errors(checked.host, resolver)


@dataclass(frozen=True)
class UrlGuard:
    """The policy and the resolver together, as the deployments handler uses them."""

    policy: UrlPolicy
    resolver: Resolver = system_resolver

    async def check(self, url: str) -> list[str]:
        return await check_url(url, self.policy, self.resolver)
