"""The events token: its own purpose, bound to one app and one deployment, with its own expiry."""

from __future__ import annotations

import pytest

from gateway.errors import TokenExpired, TokenInvalid
from gateway.server.domain.deployments.events_token import EventsTokens
from gateway.server.domain.signing import Purpose, UrlSigner

from .helpers import FakeClock, tampered

KEYS = ["old-key", "new-key"]


def test_a_token_works_for_its_deployment_only() -> None:
    tokens = EventsTokens(KEYS, 100)
    token = tokens.sign("my-app", "d-1")
    tokens.verify("my-app", "d-1", token)
    for app, deployment_id in [("my-app", "d-2"), ("other-app", "d-1")]:
        with pytest.raises(TokenInvalid):
            tokens.verify(app, deployment_id, token)


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b.c"])
def test_missing_or_malformed_is_invalid(token: str | None) -> None:
    with pytest.raises(TokenInvalid):
        EventsTokens(KEYS, 100).verify("my-app", "d-1", token)


def test_tampered_is_invalid() -> None:
    token = EventsTokens(KEYS, 100).sign("my-app", "d-1")
    with pytest.raises(TokenInvalid):
        EventsTokens(KEYS, 100).verify("my-app", "d-1", tampered(token))
    with pytest.raises(TokenInvalid):
        EventsTokens(["another-key"], 100).verify("my-app", "d-1", token)


def test_keys_rotate() -> None:
    token = EventsTokens(["old-key"], 100).sign("my-app", "d-1")
    EventsTokens(KEYS, 100).verify("my-app", "d-1", token)


def test_expiry_is_the_issuers() -> None:
    clock = FakeClock()
    issuer = EventsTokens(KEYS, 100, clock)
    token = issuer.sign("my-app", "d-1")
    clock.advance(99)
    issuer.verify("my-app", "d-1", token)
    EventsTokens(KEYS, 50, clock).verify("my-app", "d-1", token)  # not cut by a shorter ttl
    clock.advance(2)
    with pytest.raises(TokenExpired):
        issuer.verify("my-app", "d-1", token)
    with pytest.raises(TokenExpired):
        EventsTokens(KEYS, 1000, clock).verify("my-app", "d-1", token)  # nor stretched


def test_a_lifetime_longer_than_allowed_is_refused() -> None:
    token = EventsTokens(KEYS, 10_000).sign("my-app", "d-1")
    with pytest.raises(TokenInvalid):
        EventsTokens(KEYS, 100).verify("my-app", "d-1", token)


def test_source_tokens_are_not_events_tokens() -> None:
    signer = UrlSigner(KEYS, 100)
    for purpose in Purpose:
        with pytest.raises(TokenInvalid):
            EventsTokens(KEYS, 100).verify("my-app", "d-1", signer.sign(purpose, "d-1"))
