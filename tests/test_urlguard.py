"""The archive-URL rules (SSRF guard), a table row a case; DNS is a dictionary, not the network."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

import pytest

from gateway.server.domain import urlguard
from gateway.server.domain.urlguard import UrlPolicy, check_url, forbidden_address, system_resolver

POLICY = UrlPolicy.of(
    allowed_hosts=["archives.internal", "10.1.2.3", "Mixed-Case.Internal"],
    allowed_http_hosts=["plain.example.com", "archives.internal"],
)
PUBLIC = "93.184.216.34"
# What the fake DNS answers; a name missing here does not resolve.
DNS: dict[str, list[str]] = {
    "example.com": [PUBLIC],
    "plain.example.com": [PUBLIC],
    "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
    "internal.example.com": ["10.0.0.7"],
    "metadata.example.com": ["169.254.169.254"],
    "mixed.example.com": [PUBLIC, "127.0.0.1"],
    "loop6.example.com": ["::1"],
    "mapped.example.com": ["::ffff:10.0.0.1"],
    "linklocal6.example.com": ["fe80::1%eth0"],
    "cgnat.example.com": ["100.64.1.1"],
    "empty.example.com": [],
    "archives.internal": ["10.0.0.9"],
    "mixed-case.internal": ["10.0.0.10"],
}


class FakeDns:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, host: str) -> Sequence[str]:
        self.asked.append(host)
        if host not in DNS:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return DNS[host]


ABSOLUTE = "must be an absolute https URL"
HTTPS = "must use https"
USERINFO = "must not contain a user name or password"
ODD = "host is a non-standard spelling of an IP address"
CASES: list[tuple[str, str | None]] = [
    # (url, the one error expected or None when accepted)
    # -- accepted
    ("https://example.com/app.tar.gz", None),
    ("https://EXAMPLE.com:8443/app.tar.gz?X-Amz-Signature=abc&x=1#frag", None),
    ("https://v6.example.com/a.tgz", None),
    ("https://8.8.8.8/a.tgz", None),
    ("https://[2606:4700:4700::1111]/a.tgz", None),
    ("http://plain.example.com/a.tgz", None),
    ("https://archives.internal/a.tgz", None),  # allowed host: its private address is fine
    ("http://archives.internal/a.tgz", None),  # ... and it may use http too
    ("https://mixed-case.internal/a.tgz", None),  # allowed_hosts compare in lower case
    ("https://10.1.2.3/a.tgz", None),  # an allowed literal
    # -- form
    ("", ABSOLUTE),
    ("/relative/path.tgz", ABSOLUTE),
    ("example.com/a.tgz", ABSOLUTE),
    ("ftp://example.com/a.tgz", ABSOLUTE),
    ("file:///etc/passwd", ABSOLUTE),
    ("gopher://example.com/", ABSOLUTE),
    ("https:///a.tgz", ABSOLUTE),
    ("http://example.com/a.tgz", HTTPS),
    ("http://10.1.2.3/a.tgz", HTTPS),  # allowed_hosts does not allow http
    ("https://user:password@example.com/a.tgz", USERINFO),
    ("https://user@example.com/a.tgz", USERINFO),
    ("https://example.com@127.0.0.1/a.tgz", USERINFO),
    ("https://example.com/" + "a" * 2029, "must be at most 2048 characters"),
    ("https://exa mple.com/a.tgz", "must be printable ASCII"),
    ("https://example.com\\@127.0.0.1/", "must be printable ASCII"),
    ("https://example.com/\n", "must be printable ASCII"),
    ("https://bücher.example/a.tgz", "must be printable ASCII"),
    ("https://example.com:99999/", "is not a valid URL"),
    ("https://example.com:port/", "is not a valid URL"),
    ("https://[::1/", "is not a valid URL"),
    ("https://[not-ipv6]/", "is not a valid URL"),
    ("https://example.com:0/", "has an invalid port"),
    ("https://ex%61mple.com/", "host must not be percent-encoded"),
    ("https://exa_mple!.com/", "host is not a valid host name"),
    # -- IPv4 literals
    ("https://127.0.0.1/", "host is a loopback address"),
    ("https://127.255.0.1/", "host is a loopback address"),
    ("https://10.0.0.1/", "host is a private address"),
    ("https://172.16.5.4/", "host is a private address"),
    ("https://172.31.255.255/", "host is a private address"),
    ("https://192.168.1.1/", "host is a private address"),
    ("https://169.254.169.254/latest/meta-data/", "host is a link-local address"),
    ("https://169.254.0.1/", "host is a link-local address"),
    ("https://0.0.0.0/", "host is an unspecified address"),
    ("https://0.1.2.3/", "host is a private address"),  # "this network"
    ("https://224.0.0.1/", "host is a multicast address"),
    ("https://239.255.255.250/", "host is a multicast address"),
    ("https://240.0.0.1/", "host is a reserved address"),
    ("https://255.255.255.255/", "host is a reserved address"),
    ("https://100.64.0.1/", "host is a carrier-grade NAT address"),
    ("https://100.127.255.254/", "host is a carrier-grade NAT address"),
    ("https://192.0.2.1/", "host is a documentation address"),
    ("https://198.18.0.1/", "host is a benchmarking address"),
    # -- IPv6 literals
    ("https://[::1]/", "host is a loopback address"),
    ("https://[::]/", "host is an unspecified address"),
    ("https://[fe80::1]/", "host is a link-local address"),
    ("https://[fe80::1%25eth0]/", "host is an IPv6 address with a zone"),
    ("https://[fc00::1]/", "host is a private address"),
    ("https://[fd12:3456:789a::1]/", "host is a private address"),
    ("https://[ff02::1]/", "host is a multicast address"),
    ("https://[::ffff:127.0.0.1]/", "host is an IPv4-mapped IPv6 address"),
    ("https://[::ffff:7f00:1]/", "host is an IPv4-mapped IPv6 address"),
    ("https://[::ffff:169.254.169.254]/", "host is an IPv4-mapped IPv6 address"),
    ("https://[::ffff:8.8.8.8]/", "host is an IPv4-mapped IPv6 address"),
    ("https://[64:ff9b::a00:1]/", "host is an IPv6 address embedding a private address"),
    ("https://[2002:7f00:1::]/", "host is an IPv6 address embedding a loopback address"),
    ("https://[::127.0.0.1]/", "host is a reserved address"),  # IPv4-compatible (deprecated)
    ("https://[2001:db8::1]/", "host is a documentation address"),
    # -- odd spellings of addresses, and names that mean loopback
    ("https://2130706433/", ODD),
    ("https://0x7f.1/", ODD),
    ("https://0x7f000001/", ODD),
    ("https://127.1/", ODD),
    ("https://0177.0.0.1/", ODD),
    ("https://127.0.0.01/", ODD),
    ("https://1.2.3.4.5/", ODD),
    ("https://example.0x10/", ODD),
    ("https://127.0.0.1./", "host must not end with a dot"),
    ("https://localhost./", "host must not end with a dot"),
    ("https://example.com./a.tgz", "host must not end with a dot"),
    ("https://localhost/", "host is a loopback name"),
    ("https://LOCALHOST:8080/", "host is a loopback name"),
    ("https://api.localhost/", "host is a loopback name"),
    # -- names, through the resolver
    ("https://internal.example.com/", "host resolves to a private address"),
    ("https://metadata.example.com/", "host resolves to a link-local address"),
    ("https://mixed.example.com/", "host resolves to a loopback address"),
    ("https://loop6.example.com/", "host resolves to a loopback address"),
    ("https://mapped.example.com/", "host resolves to an IPv4-mapped IPv6 address"),
    ("https://linklocal6.example.com/", "host resolves to a link-local address"),
    ("https://cgnat.example.com/", "host resolves to a carrier-grade NAT address"),
    ("https://nxdomain.example.com/", "host could not be resolved"),
    ("https://empty.example.com/", "host could not be resolved"),
]


@pytest.mark.parametrize(("url", "expected"), CASES, ids=[c[0][:60] for c in CASES])
async def test_url_rules(url: str, expected: str | None) -> None:
    errors = await check_url(url, POLICY, FakeDns())
    if expected is None:
        assert errors == []
    else:
        assert len(errors) == 1, errors
        assert errors[0].startswith(expected), errors


@pytest.mark.parametrize("url", ["http://2130706433/", "http://127.1/"])
async def test_two_problems_are_both_named(url: str) -> None:
    assert await check_url(url, POLICY, FakeDns()) == [HTTPS, ODD]


async def test_resolver_is_asked_only_for_names_that_need_it() -> None:
    dns = FakeDns()
    for url in ("https://8.8.8.8/", "https://[::1]/", "https://archives.internal/", "ftp://x/"):
        await check_url(url, POLICY, dns)
    assert dns.asked == []
    await check_url("https://Example.COM/a.tgz", POLICY, dns)
    assert dns.asked == ["example.com"]


async def test_slow_resolution_counts_as_not_resolving(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urlguard, "RESOLVE_TIMEOUT_SECONDS", 0.05)

    async def hangs(host: str) -> Sequence[str]:
        await asyncio.sleep(10)
        return [PUBLIC]

    assert await check_url("https://slow.example.com/", POLICY, hangs) == [
        "host could not be resolved"
    ]


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("93.184.216.34", False),
        ("1.1.1.1", False),
        ("2606:4700:4700::1111", False),
        ("2002:5db8:d822::1", False),  # 6to4 of a public address
        ("2002:c0a8:101::1", True),  # 6to4 of 192.168.1.1
        ("64:ff9b::808:808", False),  # NAT64 of 8.8.8.8
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 of 169.254.169.254
        ("64:ff9b:1::1", True),  # local-use NAT64
        # Teredo: server 65.54.227.120, client (inverted) 192.0.2.45, a documentation address
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True),
        # Teredo: server 65.54.227.120, client 93.184.216.34 (both public)
        ("2001:0:4136:e378:8000:63bf:a247:27dd", False),
        # Teredo: server 10.0.0.1, client 93.184.216.34
        ("2001:0:a00:1:8000:63bf:a247:27dd", True),
        ("::ffff:0:0", True),
        ("2001:20::1", True),  # ORCHIDv2, in the IETF protocol block
        ("fec0::1", True),  # site-local, deprecated but not public
        ("3fff::1", True),  # documentation (RFC 9637)
        ("4000::1", True),  # outside 2000::/3: not allocated
        ("192.0.0.9", True),  # IETF protocol assignments
        ("192.88.99.1", True),  # the retired 6to4 relay anycast
    ],
)
def test_forbidden_address(address: str, forbidden: bool) -> None:
    assert (forbidden_address(ipaddress.ip_address(address)) is not None) is forbidden


# The first and last address of every range the guard refuses, with the reason it gives: the
# same table on every Python version (ipaddress' is_private changed in 3.12.4 and 3.13).
RANGES = [
    ("0.0.0.0/8", "a private address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a carrier-grade NAT address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "a private address"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("2001:2::/48", "a benchmarking address"),
    ("2001:db8::/32", "a documentation address"),
    ("fc00::/7", "a private address"),
    ("fe80::/10", "a link-local address"),
    ("ff00::/8", "a multicast address"),
    ("100::/64", "a reserved address"),
    ("64:ff9b:1::/48", "a private address"),
]


@pytest.mark.parametrize(("cidr", "reason"), RANGES)
def test_every_range_from_first_to_last_address(cidr: str, reason: str) -> None:
    network = ipaddress.ip_network(cidr)
    for ip in (network[1] if cidr == "0.0.0.0/8" else network[0], network[-1]):
        assert forbidden_address(ip) == reason, ip
    # Just outside the range, a public address.
    if cidr == "100.64.0.0/10":
        assert forbidden_address(ipaddress.ip_address("100.128.0.0")) is None


def test_verdicts_do_not_ask_the_interpreters_ipaddress_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guard's own tables decide: ipaddress' notion of private or global is never read."""

    def refuse(self: object) -> bool:
        raise AssertionError("the URL guard read ipaddress' own classification")

    for cls in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        for name in (
            "is_private",
            "is_global",
            "is_reserved",
            "is_loopback",
            "is_link_local",
            "is_multicast",
            "is_unspecified",
            "is_site_local",
        ):
            if hasattr(cls, name):
                monkeypatch.setattr(cls, name, property(refuse))
    for address in ("8.8.8.8", "10.0.0.1", "2002:5db8:d822::1", "2606:4700:4700::1111", "::1"):
        forbidden_address(ipaddress.ip_address(address))


async def test_system_resolver_answers_literals_without_dns() -> None:
    # A numeric host is answered by getaddrinfo itself: no DNS server is involved.
    assert "127.0.0.1" in await system_resolver("127.0.0.1")
