"""Archive-URL validation for deployments: the SSRF rules.

A deployment's ``download_url`` comes from a user and is fetched later by a deployer inside the
platform's network, so it must not name anything that only that network can reach. The rules:

- an absolute ``https`` URL (``http`` only for hosts in ``allowed_http_hosts``), printable ASCII,
  no user:password part, at most ``MAX_URL_LENGTH`` characters;
- its host, written as an address or resolved from a name, is never loopback, private, link-local
  (cloud metadata), unspecified, multicast, reserved, carrier-grade NAT, or an IPv6 form that
  embeds an IPv4 address (mapped, NAT64, 6to4, Teredo) whose IPv4 part is any of those;
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

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
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
    """Why the deployer must not be sent to ``ip`` (a phrase like "a loopback address"), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "an IPv6 address with a zone"
        if ip.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            reason = forbidden_address(embedded)
            if reason is not None:
                return f"an IPv6 address embedding {reason}"
            if ip in _NAT64:
                # What DNS64 answers for a public IPv4-only name on an IPv6-only network; the
                # IPv4 address inside is the one reached, and it is fine.
                return None
        if ip in _NAT64_LOCAL:
            return "a private address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a carrier-grade NAT address"
    # Reserved before private: Python counts 240.0.0.0/4 as both, and "reserved" is the truth.
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "an address that is not publicly routable"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside a NAT64, 6to4 or Teredo address (the one actually reached)."""
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


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
