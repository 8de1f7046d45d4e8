"""The API credentials of the app: the configured tokens, the exchanged JWTs, the identity
provider's JWTs (``auth.jwt``, with its keys fetched in the background) and the rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.config import Config
from gateway.server.adapters.jwks import JwksKeys
from gateway.server.domain.auth import Authenticator, CredentialVerifier, principals_of
from gateway.server.domain.exchange import ExchangedTokens
from gateway.server.domain.limits import RateLimiter
from gateway.server.domain.oidc import OidcTokens
from gateway.server.domain.signing import Clock
from gateway.server.observability.metrics import Metrics


def authenticator(
    config: Config, metrics: Metrics, clock: Clock
) -> tuple[Authenticator, ExchangedTokens, JwksKeys | None]:
    """The API credentials the configuration accepts (YAML tokens, the JWTs
    ``POST /v1/tokens/exchange`` hands out for them, the identity provider's JWTs), with the
    per-identity request rate; the exchange, and the provider's keys if any."""
    exchanged = ExchangedTokens(
        config.signing.secret_keys,
        config.auth.exchange_ttl_seconds,
        principals_of(config.auth.tokens),
        clock,
    )
    verifiers: list[CredentialVerifier] = [exchanged.verify]
    keys: JwksKeys | None = None
    jwt = config.auth.jwt
    if jwt is not None:
        fetches = metrics.jwks_fetches
        keys = JwksKeys(
            jwt.jwks_url,
            timeout=jwt.jwks_timeout,
            refresh_seconds=jwt.refresh_seconds,
            clock=clock,
            on_fetch=lambda ok: fetches.labels("ok" if ok else "failed").inc(),
        )
        verifiers.append(OidcTokens(jwt, keys).verify)
    rate = config.auth.limits.rate
    limiter = RateLimiter(*rate) if rate is not None else None
    return Authenticator(config.auth.tokens, verifiers, limiter), exchanged, keys


def jwks_context(keys: JwksKeys) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        async with keys.running():
            yield

    return context
