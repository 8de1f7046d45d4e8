"""The platform's auth API as its clients call it: ``POST /v1/tokens/exchange`` (a JWT for an API
token, accepted wherever the token is), ``GET /v1/users/self``, ``GET /v1/regions``, and the app
object ``GET /v1/apps/{app}`` with the address of its deployments stream."""

from __future__ import annotations

import base64
import json
import logging
import time
import warnings
from typing import Any

import aiohttp
import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from gateway.server.domain.exchange import ISSUER, derived_key

from .helpers import LIMITED_TOKEN, SECRET, TOKEN, Gateway, StartGateway

OTHER_SECRET = "another-secret-key-abcdef"


def basic(token: str) -> dict[str, str]:
    """HTTP Basic with an empty user and the token as password, as the platform's clients send."""
    return {"Authorization": "Basic " + base64.b64encode(f":{token}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def exchange(http: aiohttp.ClientSession, gateway: Gateway, token: str = TOKEN) -> str:
    async with http.post(f"{gateway.url}/v1/tokens/exchange", headers=basic(token)) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert set(body) == {"token"}
    value: str = body["token"]
    return value


async def status_of(
    http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    async with http.request(method, url, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_exchange_gives_a_jwt_that_works_like_the_token(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"auth": {"exchange_ttl_seconds": 900}})
    token = await exchange(http, gateway)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "HS256"
    assert claims["sub"] == "ci"
    assert claims["exp"] - claims["iat"] == 900
    assert abs(claims["iat"] - time.time()) < 5
    # Signed with a key derived from the secret, not with the secret itself.
    jwt.decode(token, derived_key(SECRET), algorithms=["HS256"], issuer=ISSUER)
    with pytest.raises(jwt.InvalidSignatureError), warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # the secret is 26 bytes
        jwt.decode(token, SECRET, algorithms=["HS256"])

    # Wherever the API token works: create a source, list deployments.
    async with http.post(f"{gateway.url}/v1/sources", headers=bearer(token)) as resp:
        assert resp.status == 201
    status, body = await status_of(
        http, "GET", f"{gateway.url}/v1/apps/any-app/deployments", bearer(token)
    )
    assert (status, body["deployments"]) == (200, [])


async def test_the_jwt_is_limited_to_the_tokens_apps(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    token = await exchange(http, gateway, LIMITED_TOKEN)
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "limited"
    ok, _ = await status_of(http, "GET", f"{gateway.url}/v1/apps/my-app", bearer(token))
    assert ok == 200
    status, body = await status_of(http, "GET", f"{gateway.url}/v1/apps/other-app", bearer(token))
    assert status == 403
    assert "may not deploy app 'other-app'" in body["error"]


async def test_the_jwt_works_on_every_instance_and_across_key_rotation(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    first = await start_gateway()
    second = await start_gateway()
    token = await exchange(http, first)
    status, _ = await status_of(http, "GET", f"{second.url}/v1/users/self", bearer(token))
    assert status == 200
    # A new key appended: the old one still verifies, the new one signs.
    rotated = await start_gateway({"signing": {"secret_keys": [SECRET, OTHER_SECRET]}})
    status, _ = await status_of(http, "GET", f"{rotated.url}/v1/users/self", bearer(token))
    assert status == 200
    newer = await exchange(http, rotated)
    jwt.decode(newer, derived_key(OTHER_SECRET), algorithms=["HS256"], issuer=ISSUER)
    # An instance that never had the new key refuses what it signed.
    status, body = await status_of(http, "GET", f"{first.url}/v1/users/self", bearer(newer))
    assert status == 401
    assert body == {"error": "invalid API token"}


async def test_an_expired_jwt_is_refused_saying_so(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    token = await exchange(http, gateway)
    gateway.clock.advance(3600 + 10)
    async with http.get(f"{gateway.url}/v1/users/self", headers=bearer(token)) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        body = await resp.json()
    assert "expired" in body["error"]


@pytest.mark.parametrize("part", ["payload", "signature", "alg-none"])
async def test_a_tampered_jwt_is_refused(
    gateway: Gateway, http: aiohttp.ClientSession, part: str
) -> None:
    token = await exchange(http, gateway, LIMITED_TOKEN)
    head, payload, signature = token.split(".")
    if part == "payload":
        claims = jwt.decode(token, options={"verify_signature": False})
        claims["sub"] = "ci"  # the token that may deploy every app
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    elif part == "signature":
        signature = signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")
    else:
        claims = jwt.decode(token, options={"verify_signature": False})
        head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        signature = ""
    forged = f"{head}.{payload}.{signature}"
    status, body = await status_of(http, "GET", f"{gateway.url}/v1/apps/other-app", bearer(forged))
    assert status == 401, body
    assert body == {"error": "invalid API token"}


async def test_a_jwt_signed_with_another_key_or_issuer_is_refused(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "ci", "iat": now, "exp": now + 600}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # the secret is 26 bytes
        with_secret = jwt.encode(claims, SECRET, algorithm="HS256")
    for forged in (
        jwt.encode(claims, derived_key(OTHER_SECRET), algorithm="HS256"),
        with_secret,
        jwt.encode({**claims, "iss": "someone-else"}, derived_key(SECRET), algorithm="HS256"),
    ):
        status, body = await status_of(http, "GET", f"{gateway.url}/v1/users/self", bearer(forged))
        assert (status, body) == (401, {"error": "invalid API token"})


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("not-a-token-at-all"),
        {"Authorization": "Basic !!!"},
    ],
)
async def test_exchange_refuses_a_bad_credential(
    gateway: Gateway, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    async with http.post(f"{gateway.url}/v1/tokens/exchange", headers=headers) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert set(body) == {"error"}


async def test_a_jwt_is_not_exchanged_again(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    """Only an API token is exchanged: a JWT cannot renew itself for ever."""
    token = await exchange(http, gateway)
    async with http.post(f"{gateway.url}/v1/tokens/exchange", headers=basic(token)) as resp:
        assert resp.status == 401


async def test_users_self(start_gateway: StartGateway, http: aiohttp.ClientSession) -> None:
    tokens = [
        {"name": "ci", "token": TOKEN, "email": "ci@example.com", "fullname": "Continuous I."},
        {"name": "limited", "token": LIMITED_TOKEN, "apps": ["my-app"]},
    ]
    gateway = await start_gateway({"auth": {"tokens": tokens}})
    jwt_token = await exchange(http, gateway)
    for credential in (bearer(jwt_token), basic(TOKEN)):
        status, body = await status_of(http, "GET", f"{gateway.url}/v1/users/self", credential)
        assert status == 200
        assert body == {
            "user": {
                "id": "ci",
                "username": "ci",
                "email": "ci@example.com",
                "fullname": "Continuous I.",
            }
        }
    status, body = await status_of(
        http, "GET", f"{gateway.url}/v1/users/self", bearer(LIMITED_TOKEN)
    )
    assert body["user"] == {"id": "limited", "username": "limited", "email": "", "fullname": ""}
    status, body = await status_of(http, "GET", f"{gateway.url}/v1/users/self", {})
    assert status == 401


async def test_neither_endpoint_logs_a_token_or_a_jwt(
    gateway: Gateway, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = await exchange(http, gateway)
    await status_of(http, "GET", f"{gateway.url}/v1/users/self", bearer(token))
    await status_of(http, "GET", f"{gateway.url}/v1/users/self", bearer(token + "x"))
    async with http.post(f"{gateway.url}/v1/tokens/exchange", headers=basic("wrong-token-123")):
        pass
    written = caplog.text + json.dumps(gateway.access_lines())
    for secret in (TOKEN, token, token.split(".")[2], "wrong-token-123"):
        assert secret not in written
    assert "exchanged" in caplog.text  # the exchange is logged, by the token's name
    assert "'ci'" in caplog.text


async def test_the_app_object(start_gateway: StartGateway, http: aiohttp.ClientSession) -> None:
    gateway = await start_gateway()
    status, body = await status_of(http, "GET", f"{gateway.url}/v1/apps/my-app", bearer(TOKEN))
    assert status == 200
    port = gateway.url.rsplit(":", 1)[1]
    assert body == {
        "app": {
            "id": "my-app",
            "name": "my-app",
            "created_at": None,
            "links": {
                "deployments_stream": f"ws://127.0.0.1:{port}/v1/apps/my-app/deployments/stream"
            },
        }
    }
    secure = await start_gateway({"server": {"public_url": "https://sources.example.com/gw/"}})
    status, body = await status_of(http, "GET", f"{secure.url}/v1/apps/my-app", bearer(TOKEN))
    assert body["app"]["links"]["deployments_stream"] == (
        "wss://sources.example.com/gw/v1/apps/my-app/deployments/stream"
    )


async def test_the_app_object_errors(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    url = f"{gateway.url}/v1/apps"
    assert await status_of(http, "GET", f"{url}/my-app", {}) == (
        401,
        {"error": "missing API token: use 'Authorization: Bearer <token>'"},
    )
    status, body = await status_of(http, "GET", f"{url}/other-app", bearer(LIMITED_TOKEN))
    assert status == 403
    for name in ("My-App", "ab", "app-", "1app", "a" * 49):
        status, body = await status_of(http, "GET", f"{url}/{name}", bearer(TOKEN))
        assert (status, body) == (404, {"resource": "app", "error": "not found"}), name


async def test_regions_name_this_gateway(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    token = await exchange(http, gateway)
    status, body = await status_of(http, "GET", f"{gateway.url}/v1/regions", bearer(token))
    assert status == 200
    (region,) = body["regions"]
    assert region["default"] is True
    assert region["api"] == region["database_api"] == gateway.url
    status, _ = await status_of(http, "GET", f"{gateway.url}/v1/regions", {})
    assert status == 401
