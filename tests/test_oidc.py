"""Bearer JWTs from an OpenID Connect provider (``auth.jwt``): a JWKS server runs in the test
process with RSA and EC keys made by ``cryptography``; real gateways verify tokens against it."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.config import ConfigError, config_from_dict

from .helpers import TOKEN, Gateway, StartGateway

ISSUER = "https://idp.example/realms/platform"
AUDIENCE = "sources-gateway"


class Provider:
    """A JWKS endpoint whose keys, and whether it answers, the test changes."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}  # kid -> private key
        self.published: list[str] = []  # the kids the JWKS lists
        self.mode = "ok"  # or "500", "hang"
        self.hits = 0
        self.url = ""
        self._release = asyncio.Event()

    def add(self, kid: str, private: Any, publish: bool = True) -> None:
        self.keys[kid] = private
        if publish:
            self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            private = self.keys[kid]
            if isinstance(private, rsa.RSAPrivateKey):
                jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
            else:
                jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": keys}

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.mode == "500":
            return web.json_response({"error": "down"}, status=500)
        if self.mode == "hang":
            await self._release.wait()
        return web.json_response(self.jwks())

    def release(self) -> None:
        self._release.set()

    def token(self, kid: str, alg: str | None = None, **claims: Any) -> str:
        private = self.keys[kid]
        alg = alg or ("RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256")
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "sub": "f3b1c2d4",
            "email": "alice@example.com",
            "preferred_username": "alice",
            "apps": ["my-app", "other-app"],
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, private, algorithm=alg, headers={"kid": kid})


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def provider(aiohttp_server: Any) -> AsyncIterator[Provider]:
    provider = Provider()
    provider.add("rsa-1", RSA_KEY)
    provider.add("ec-1", EC_KEY)
    app = web.Application()
    app.router.add_get("/realms/platform/protocol/openid-connect/certs", provider.handle)
    server = await aiohttp_server(app)
    provider.url = str(server.make_url("/realms/platform/protocol/openid-connect/certs"))
    yield provider
    provider.release()


def jwt_section(provider: Provider, **extra: Any) -> dict[str, Any]:
    section = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_url": provider.url,
        "algorithms": ["RS256", "ES256"],
        "apps_claim": "apps",
        "name_claim": "preferred_username",
        "jwks_timeout": 2,
        **extra,
    }
    return {"auth": {"jwt": section}}


@pytest.fixture
async def oidc_gateway(start_gateway: StartGateway, provider: Provider) -> Gateway:
    return await start_gateway(jwt_section(provider))


async def create(
    http: aiohttp.ClientSession, gateway: Gateway, token: str
) -> aiohttp.ClientResponse:
    async with http.post(
        f"{gateway.url}/v1/sources", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        await resp.read()
        return resp


async def test_tokens_signed_by_the_providers_rsa_and_ec_keys_are_accepted(
    oidc_gateway: Gateway, http: aiohttp.ClientSession, provider: Provider
) -> None:
    fetched = provider.hits
    assert fetched == 1  # at start
    for kid in ("rsa-1", "ec-1"):
        for _ in range(5):
            resp = await create(http, oidc_gateway, provider.token(kid))
            assert resp.status == 201
    # Basic with the JWT as password works as for any API token.
    basic = "Basic " + base64.b64encode(f":{provider.token('ec-1')}".encode()).decode()
    async with http.post(
        f"{oidc_gateway.url}/v1/sources", headers={"Authorization": basic}
    ) as resp:
        assert resp.status == 201
    assert provider.hits == fetched  # never a fetch per request
    # The YAML tokens keep working beside the provider's.
    assert (await create(http, oidc_gateway, TOKEN)).status == 201


async def test_the_apps_and_user_come_from_the_claims(
    oidc_gateway: Gateway, http: aiohttp.ClientSession, provider: Provider
) -> None:
    source = await oidc_gateway.uploaded_source(http, gzip.compress(b"an app"))
    payload = {"deployment": {"git_ref": "v1", "download_url": source["download_url"]}}

    async def deploy(app: str, token: str) -> tuple[int, dict[str, Any]]:
        url = f"{oidc_gateway.url}/v1/apps/{app}/deployments"
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(url, json=payload, headers=headers) as resp:
            return resp.status, await resp.json()

    status, body = await deploy("my-app", provider.token("rsa-1"))
    assert status == 201, body
    assert body["deployment"]["pusher"]["name"] == "alice"
    assert body["deployment"]["pusher"]["email"] == "alice@example.com"
    status, body = await deploy("third-app", provider.token("rsa-1"))
    assert status == 403, body
    # A space-separated string, as OAuth scopes are written.
    spaced = provider.token("ec-1", apps="third-app  fourth-app", preferred_username="bob")
    status, body = await deploy("third-app", spaced)
    assert status == 201, body
    assert body["deployment"]["pusher"]["name"] == "bob"
    status, _ = await deploy("my-app", spaced)
    assert status == 403
    status, _ = await deploy("my-app", provider.token("ec-1", apps=None))
    assert status == 403  # no claim: no app


def hs256_with_the_public_key(provider: Provider) -> str:
    """The classic confusion attack: an HMAC "signature" keyed with the RSA public key."""
    public = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","kid":"rsa-1","typ":"JWT"}')
    claims = jwt.decode(provider.token("rsa-1"), options={"verify_signature": False})
    body = jwt.utils.base64url_encode(jwt.api_jws.json.dumps(claims).encode())
    signature = hmac.new(public, header + b"." + body, hashlib.sha256).digest()
    return (header + b"." + body + b"." + jwt.utils.base64url_encode(signature)).decode()


def alg_none(provider: Provider) -> str:
    claims = jwt.decode(provider.token("rsa-1"), options={"verify_signature": False})
    return jwt.encode(claims, None, algorithm="none", headers={"kid": "rsa-1"})


BAD_TOKENS = {
    "expired": (lambda p: p.token("rsa-1", exp=int(time.time()) - 120), "expired"),
    "not yet valid": (lambda p: p.token("rsa-1", nbf=int(time.time()) + 120), "not valid yet"),
    "no exp": (lambda p: p.token("rsa-1", exp=None), "invalid bearer token"),
    "wrong audience": (lambda p: p.token("ec-1", aud="another-service"), "audience"),
    "alg none": (alg_none, "algorithm not allowed"),
    "hs256 with the public key": (hs256_with_the_public_key, "algorithm not allowed"),
    "rs256 over the ec key": (
        lambda p: jwt.encode(
            jwt.decode(p.token("ec-1"), options={"verify_signature": False}),
            RSA_KEY,
            algorithm="RS256",
            headers={"kid": "ec-1"},
        ),
        "does not match",
    ),
    "tampered": (lambda p: p.token("rsa-1")[:-6] + "AAAAAA", "invalid bearer token"),
    "no user": (lambda p: p.token("rsa-1", preferred_username=None), "preferred_username"),
    # Another issuer's token is not the provider's to judge: an unknown API token.
    "wrong issuer": (lambda p: p.token("rsa-1", iss="https://evil.example"), "invalid API token"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused(
    oidc_gateway: Gateway, http: aiohttp.ClientSession, provider: Provider, case: str
) -> None:
    make, message = BAD_TOKENS[case]
    token = make(provider)
    async with http.post(
        f"{oidc_gateway.url}/v1/sources", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert message in (await resp.json())["error"]
    assert provider.hits == 1


async def test_a_token_within_the_clock_tolerance_is_accepted(
    start_gateway: StartGateway, http: aiohttp.ClientSession, provider: Provider
) -> None:
    gateway = await start_gateway(jwt_section(provider, leeway_seconds=120))
    late = provider.token("rsa-1", exp=int(time.time()) - 60)
    early = provider.token("ec-1", nbf=int(time.time()) + 60)
    assert (await create(http, gateway, late)).status == 201
    assert (await create(http, gateway, early)).status == 201


async def test_a_rotated_key_is_fetched_once_and_an_unknown_kid_at_most_once_a_minute(
    oidc_gateway: Gateway, http: aiohttp.ClientSession, provider: Provider
) -> None:
    provider.add("rsa-2", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert (await create(http, oidc_gateway, provider.token("rsa-2"))).status == 201
    assert provider.hits == 2
    assert (await create(http, oidc_gateway, provider.token("rsa-2"))).status == 201
    assert provider.hits == 2

    # A key the provider does not publish: one fetch, then 401 without asking again.
    provider.add("stray", EC_KEY, publish=False)
    for _ in range(5):
        assert (await create(http, oidc_gateway, provider.token("stray"))).status == 401
    assert provider.hits == 3
    oidc_gateway.clock.advance(61)
    assert (await create(http, oidc_gateway, provider.token("stray"))).status == 401
    assert provider.hits == 4
    # Published since: after a minute it is asked for again, and found.
    provider.published.append("stray")
    oidc_gateway.clock.advance(61)
    assert (await create(http, oidc_gateway, provider.token("stray"))).status == 201
    assert provider.hits == 5


@pytest.mark.parametrize("mode", ["500", "hang"])
async def test_cached_keys_keep_working_while_the_provider_is_down(
    oidc_gateway: Gateway, http: aiohttp.ClientSession, provider: Provider, mode: str
) -> None:
    provider.mode = mode
    for kid in ("rsa-1", "ec-1"):
        assert (await create(http, oidc_gateway, provider.token(kid))).status == 201
    provider.add("rsa-3", RSA_KEY)
    started = time.monotonic()
    resp = await create(http, oidc_gateway, provider.token("rsa-3"))
    assert resp.status == 401
    assert time.monotonic() - started < 1.8  # the request waited at most a second
    assert provider.hits == 2
    # The failed fetch kept the cached keys.
    await asyncio.sleep(0.1 if mode == "500" else 2.2)  # the hanging fetch times out meanwhile
    assert (await create(http, oidc_gateway, provider.token("ec-1"))).status == 201
    provider.release()


async def test_the_gateway_starts_while_the_provider_is_down(
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    provider: Provider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    provider.mode = "500"
    gateway = await start_gateway(jwt_section(provider))
    assert any(
        "could not fetch the identity provider's keys" in r.getMessage() for r in caplog.records
    )
    assert (await create(http, gateway, TOKEN)).status == 201
    assert (await create(http, gateway, provider.token("rsa-1"))).status == 401
    provider.mode = "ok"
    gateway.clock.advance(61)
    assert (await create(http, gateway, provider.token("rsa-1"))).status == 201
    # No token of any kind appears in the log.
    for record in caplog.records:
        assert TOKEN not in record.getMessage()


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512", "rs256"])
def test_symmetric_and_no_algorithms_are_refused_in_the_configuration(
    provider: Provider, alg: str
) -> None:
    data = {
        "server": {"public_url": "http://127.0.0.1:8080"},
        "signing": {"secret_keys": ["a-secret-key-of-some-length"]},
        "storage": {"bucket": "sources"},
        **jwt_section(provider, algorithms=["RS256", alg]),
    }
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, env={})
    assert info.value.path == "auth.jwt.algorithms[1]"
