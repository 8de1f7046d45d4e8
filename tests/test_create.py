"""POST /v1/sources: API tokens and the answer's shape."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime

import aiohttp
import pytest

from gateway.ids import SOURCE_ID, new_source_id
from gateway.server.domain.signing import UrlSigner
from gateway.server.domain.sources import CreatedSource

from .helpers import LIMITED_TOKEN, TOKEN, Gateway, StartGateway


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TOKEN}", f"bearer {TOKEN}", basic("", TOKEN), basic("anyone", TOKEN)],
    ids=["bearer", "bearer-lowercase", "basic-empty-user", "basic-named-user"],
)
async def test_accepted_token_forms(
    gateway: Gateway, http: aiohttp.ClientSession, authorization: str
) -> None:
    async with http.post(
        f"{gateway.url}/v1/sources", headers={"Authorization": authorization}
    ) as resp:
        assert resp.status == 201


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong-token",
        f"Bearer {TOKEN}x",
        f"Token {TOKEN}",
        basic("", "wrong"),
        basic(TOKEN, ""),
        "Basic !!!not-base64",
    ],
)
async def test_refused_tokens_get_401(
    gateway: Gateway, http: aiohttp.ClientSession, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with http.post(f"{gateway.url}/v1/sources", headers=headers) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        body = await resp.json()
        assert set(body) == {"error"} and body["error"]


async def test_sha256_configured_token(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    digest = hashlib.sha256(b"hashed-token-abc").hexdigest()
    gateway = await start_gateway(
        {"auth": {"tokens": [{"name": "h", "token": f"sha256:{digest}", "apps": ["*"]}]}}
    )
    url = f"{gateway.url}/v1/sources"
    async with http.post(url, headers={"Authorization": "Bearer hashed-token-abc"}) as resp:
        assert resp.status == 201
    async with http.post(url, headers={"Authorization": f"Bearer sha256:{digest}"}) as resp:
        assert resp.status == 401  # the digest itself is not a token


async def test_limited_token_may_create_sources(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {LIMITED_TOKEN}"}
    async with http.post(f"{gateway.url}/v1/sources", headers=headers) as resp:
        assert resp.status == 201


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (None, None),
        (b"", "application/json"),  # documented: -H 'Content-Type: application/json' -d ''
        (b"", "application/x-www-form-urlencoded"),  # curl -d '' without a content type
        (b"{}", "application/json"),
        (b"  {}\n", "application/json; charset=utf-8"),
    ],
)
async def test_create_accepts_empty_bodies(
    gateway: Gateway, http: aiohttp.ClientSession, body: bytes | None, content_type: str | None
) -> None:
    headers = {**gateway.auth, "Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    async with http.post(f"{gateway.url}/v1/sources", data=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()


async def test_create_answer_shape(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    before = int(gateway.clock())
    async with http.post(f"{gateway.url}/v1/sources", headers=gateway.auth) as resp:
        assert resp.status == 201
        assert resp.content_type == "application/json"
        body = await resp.json()
    source_id = body["id"]
    assert uuid.UUID(source_id).version == 4
    assert set(body) == {"upload_url", "download_url", "id", "expires_at", "source"}
    assert body["source"] == {
        k: body[k] for k in ("upload_url", "download_url", "id", "expires_at")
    }
    for name in ("upload_url", "download_url"):
        assert body[name].startswith(f"{gateway.url}/v1/sources/{source_id}?token=")
    assert body["upload_url"] != body["download_url"]
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before + 600 <= expires.timestamp() <= before + 601


async def test_urls_are_built_on_public_url(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"server": {"public_url": "https://sources.example.com/"}})
    async with http.post(
        f"{gateway.url}/v1/sources",
        headers={**gateway.auth, "Host": "evil.example.net", "X-Forwarded-Host": "evil"},
    ) as resp:
        body = await resp.json()
    assert body["upload_url"].startswith(f"https://sources.example.com/v1/sources/{body['id']}?")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"[]", "application/json", 400, "invalid_json"),
        (b'"text"', "application/json", 400, "invalid_json"),
        (b"name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"{}", "text/plain", 415, "unsupported_media_type"),
    ],
)
async def test_create_refuses_bad_bodies(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    headers = {**gateway.auth, "Content-Type": content_type}
    async with http.post(f"{gateway.url}/v1/sources", data=body, headers=headers) as resp:
        assert resp.status == status
        payload = await resp.json()
        assert payload["code"] == code
        assert payload["error"]


async def test_create_refuses_a_large_body(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    headers = {**gateway.auth, "Content-Type": "application/json"}
    body = b'{"x": "' + b"a" * 100_000 + b'"}'
    async with http.post(f"{gateway.url}/v1/sources", data=body, headers=headers) as resp:
        assert resp.status == 413
        assert "error" in await resp.json()


async def test_auth_is_checked_before_the_body(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{gateway.url}/v1/sources", data=b"{not json") as resp:
        assert resp.status == 401


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8080", "https://sources.example.com/gw", 'https://ex\u00e4mple.com/a"b\\c'],
)
def test_the_answer_template_is_the_json_of_the_source(base_url: str) -> None:
    sid = new_source_id()
    signer = UrlSigner(["k" * 32], 600)
    upload, download = signer.sign_all(sid, signer.expiry())
    body = CreatedSource(base_url).render(sid, upload, download, "2026-11-24T10:00:00Z")
    url = f"{base_url}/v1/sources/{sid}?token="
    source = {
        "upload_url": url + upload,
        "download_url": url + download,
        "id": sid,
        "expires_at": "2026-11-24T10:00:00Z",
    }
    assert json.loads(body) == {**source, "source": source}
    assert body == json.dumps({**source, "source": source})


def test_source_ids_are_random_uuid4s_in_their_usual_spelling() -> None:
    ids = {new_source_id() for _ in range(2000)}
    assert len(ids) == 2000
    for sid in ids:
        parsed = uuid.UUID(sid)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == sid
        assert SOURCE_ID.fullmatch(sid)
    # Every value of the variant's free bit and of the random digits turns up.
    assert {sid[19] for sid in ids} == set("89ab")
    assert {sid[0] for sid in ids} == set("0123456789abcdef")
