"""URL tokens: purpose, id binding, expiry, key rotation; and how the HTTP layer reports them."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from itsdangerous import URLSafeTimedSerializer

from gateway.errors import TokenExpired, TokenInvalid
from gateway.server.domain.signing import CLOCK_SKEW_TOLERANCE, Purpose, UrlSigner

from .helpers import Gateway, StartGateway, tampered

OLD_KEY, NEW_KEY = "old-signing-key-0123456789", "new-signing-key-9876543210"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def source_id() -> str:
    return str(uuid.uuid4())


def test_token_verifies_for_its_purpose_and_id() -> None:
    signer = UrlSigner([OLD_KEY], 600)
    sid = source_id()
    token = signer.sign(Purpose.UPLOAD, sid)
    assert signer.verify(Purpose.UPLOAD, sid, token).source_id == sid


@pytest.mark.parametrize("purpose", list(Purpose))
def test_wrong_purpose_is_invalid(purpose: Purpose) -> None:
    signer = UrlSigner([OLD_KEY], 600)
    sid = source_id()
    other = Purpose.DOWNLOAD if purpose is Purpose.UPLOAD else Purpose.UPLOAD
    with pytest.raises(TokenInvalid):
        signer.verify(other, sid, signer.sign(purpose, sid))


def test_wrong_id_is_invalid() -> None:
    signer = UrlSigner([OLD_KEY], 600)
    with pytest.raises(TokenInvalid):
        signer.verify(Purpose.UPLOAD, source_id(), signer.sign(Purpose.UPLOAD, source_id()))


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b.c", "eyJpZCI6IngifQ.AAAA.BBBB"])
def test_malformed_is_invalid(token: str | None) -> None:
    with pytest.raises(TokenInvalid):
        UrlSigner([OLD_KEY], 600).verify(Purpose.UPLOAD, source_id(), token)


def test_tampered_is_invalid() -> None:
    signer = UrlSigner([OLD_KEY], 600)
    sid = source_id()
    token = signer.sign(Purpose.DOWNLOAD, sid)
    # Not the very last character: its low bits are base64 padding, ignored by any decoder.
    for i in (0, len(token) // 2, len(token) - 2):
        flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        with pytest.raises(TokenInvalid):
            signer.verify(Purpose.DOWNLOAD, sid, flipped)


def test_expiry_is_reported_as_expired() -> None:
    clock = Clock()
    signer = UrlSigner([OLD_KEY], 600, clock=clock)
    sid = source_id()
    token = signer.sign(Purpose.UPLOAD, sid)
    clock.now += 600
    assert signer.verify(Purpose.UPLOAD, sid, token).expires_at == clock.now
    clock.now += 1
    with pytest.raises(TokenExpired, match="expired"):
        signer.verify(Purpose.UPLOAD, sid, token)


def test_small_clock_skew_between_instances_is_tolerated() -> None:
    sid = source_id()
    ahead = UrlSigner([OLD_KEY], 600, clock=Clock(1_700_000_010.0))
    behind = UrlSigner([OLD_KEY], 600, clock=Clock(1_700_000_000.0))
    behind.verify(Purpose.UPLOAD, sid, ahead.sign(Purpose.UPLOAD, sid))
    far_ahead = UrlSigner([OLD_KEY], 600, clock=Clock(1_700_001_000.0))
    with pytest.raises(TokenInvalid):
        behind.verify(Purpose.UPLOAD, sid, far_ahead.sign(Purpose.UPLOAD, sid))


def test_key_rotation() -> None:
    sid = source_id()
    old = UrlSigner([OLD_KEY], 600).sign(Purpose.DOWNLOAD, sid)
    rotated = UrlSigner([OLD_KEY, NEW_KEY], 600)
    rotated.verify(Purpose.DOWNLOAD, sid, old)  # signed with a key still in the list: works
    new = rotated.sign(Purpose.DOWNLOAD, sid)
    UrlSigner([NEW_KEY], 600).verify(Purpose.DOWNLOAD, sid, new)  # the last key signs
    with pytest.raises(TokenInvalid):
        UrlSigner([NEW_KEY], 600).verify(Purpose.DOWNLOAD, sid, old)  # its key was removed


# --- over HTTP ----------------------------------------------------------------------------------


def with_token(url: str, token: str | None) -> str:
    base = url.split("?")[0]
    return base if token is None else f"{base}?token={token}"


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


async def expect_403(resp: aiohttp.ClientResponse, code: str) -> None:
    assert resp.status == 403
    body = await resp.json()
    assert body["code"] == code
    assert body["error"]


async def test_http_invalid_tokens(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    source = await gateway.create_source(http)
    other = await gateway.create_source(http)
    upload, download = source["upload_url"], source["download_url"]
    cases = {
        "missing": with_token(upload, None),
        "empty": with_token(upload, ""),
        "tampered": with_token(upload, tampered(token_of(upload))),
        "download token on PUT": with_token(upload, token_of(download)),
        "other id": with_token(upload, token_of(other["upload_url"])),
    }
    for name, url in cases.items():
        async with http.put(url, data=b"data") as resp:
            assert resp.status == 403, name
            await expect_403(resp, "token_invalid")
    for url in (with_token(download, token_of(upload)), with_token(download, None)):
        async with http.get(url) as resp:
            await expect_403(resp, "token_invalid")
        async with http.head(url) as resp:
            assert resp.status == 403


async def test_http_expired_tokens(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=b"data") as resp:
        assert resp.status == 200
    gateway.clock.advance(601)
    async with http.put(source["upload_url"], data=b"data") as resp:
        await expect_403(resp, "token_expired")
    async with http.get(source["download_url"]) as resp:
        await expect_403(resp, "token_expired")


async def test_http_short_ttl(start_gateway: StartGateway, http: aiohttp.ClientSession) -> None:
    gateway = await start_gateway({"sources": {"ttl_seconds": 5}})
    source = await gateway.create_source(http)
    gateway.clock.advance(6)
    async with http.get(source["download_url"]) as resp:
        await expect_403(resp, "token_expired")


async def test_http_rotation_across_instances(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    old = await start_gateway({"signing": {"secret_keys": [OLD_KEY]}})
    rotated = await start_gateway({"signing": {"secret_keys": [OLD_KEY, NEW_KEY]}})
    retired = await start_gateway({"signing": {"secret_keys": [NEW_KEY]}})
    source = await old.create_source(http)
    sid, token = source["id"], token_of(source["upload_url"])
    async with http.put(f"{rotated.url}/v1/sources/{sid}?token={token}", data=b"x") as resp:
        assert resp.status == 200
    async with http.put(f"{retired.url}/v1/sources/{sid}?token={token}", data=b"x") as resp:
        await expect_403(resp, "token_invalid")


# --- the expiry travels in the token ------------------------------------------------------------


def test_token_carries_its_expiry_to_an_instance_with_a_longer_ttl() -> None:
    clock = Clock()
    sid = source_id()
    short = UrlSigner([OLD_KEY], 5, clock=clock)
    long = UrlSigner([OLD_KEY], 600, clock=clock)
    token = short.sign(Purpose.DOWNLOAD, sid)
    clock.now += 5
    assert long.verify(Purpose.DOWNLOAD, sid, token).expires_at == clock.now
    clock.now += 1
    with pytest.raises(TokenExpired):
        long.verify(Purpose.DOWNLOAD, sid, token)


def test_a_lifetime_longer_than_the_receivers_ttl_is_invalid() -> None:
    clock = Clock()
    sid = source_id()
    token = UrlSigner([OLD_KEY], 600, clock=clock).sign(Purpose.UPLOAD, sid)
    lowered = UrlSigner([OLD_KEY], 300, clock=clock)
    with pytest.raises(TokenInvalid):
        lowered.verify(Purpose.UPLOAD, sid, token)
    # Within the clock tolerance a longer lifetime is still believed.
    slightly = UrlSigner([OLD_KEY], 600 - int(CLOCK_SKEW_TOLERANCE), clock=clock)
    assert slightly.verify(Purpose.UPLOAD, sid, token).expires_at == clock.now + 600


def test_expiry_is_signed() -> None:
    sid = source_id()
    signer = UrlSigner([OLD_KEY], 600)
    payload, _, rest = signer.sign(Purpose.UPLOAD, sid).partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert set(claims) == {"id", "exp"}
    forged = base64.urlsafe_b64encode(
        json.dumps({**claims, "exp": claims["exp"] + 60}, separators=(",", ":")).encode()
    )
    with pytest.raises(TokenInvalid):
        signer.verify(Purpose.UPLOAD, sid, forged.decode().rstrip("=") + "." + rest)


@pytest.mark.parametrize("exp", ["1700000600", 1700000600.5, None, True])
def test_an_expiry_that_is_not_whole_seconds_is_invalid(exp: object) -> None:
    sid = source_id()
    # Signed with the right key and salt, on the real clock like the signer below.
    serializer = URLSafeTimedSerializer([OLD_KEY], salt="sources-gateway.upload")
    token = serializer.dumps({"id": sid, "exp": exp})
    with pytest.raises(TokenInvalid):
        UrlSigner([OLD_KEY], 600).verify(Purpose.UPLOAD, sid, token)


async def test_http_expiry_is_the_one_handed_out_on_every_instance(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    short = await start_gateway({"sources": {"ttl_seconds": 5}})
    long = await start_gateway({"sources": {"ttl_seconds": 600}})
    source = await short.create_source(http)
    expires_at = datetime.fromisoformat(source["expires_at"]).timestamp()
    on_long = f"{long.url}/v1/sources/{source['id']}?token={token_of(source['upload_url'])}"
    async with http.put(on_long, data=b"x") as resp:
        assert resp.status == 200  # within its 5 seconds
    for gateway in (short, long):
        gateway.clock.advance(expires_at - gateway.clock() + 1)
    async with http.put(on_long, data=b"x") as resp:
        await expect_403(resp, "token_expired")  # the long instance does not stretch it
    # And a URL from the long instance is more than the short one would ever hand out.
    source = await long.create_source(http)
    on_short = f"{short.url}/v1/sources/{source['id']}?token={token_of(source['download_url'])}"
    async with http.get(on_short) as resp:
        await expect_403(resp, "token_invalid")
