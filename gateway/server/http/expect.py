"""The ``Expect`` request header: only ``100-continue`` is understood; anything else is a JSON 417.

aiohttp answers ``Expect`` before any middleware runs, in each route's expect handler, with a
plain-text 417 (and a 500 when the value is not UTF-8) that no access line records. Here every
route's expect handler lets the request through to the middlewares, which refuse it like any
other bad request; a resource registered last does the same for paths no route matches.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from aiohttp.web_urldispatcher import _InfoDict
from yarl import URL

from gateway.errors import ExpectationFailed
from gateway.server.observability.access import UNMATCHED

CONTINUE = "100-continue"
# Set on a request once its 100 Continue is sent.
_CONTINUED = web.RequestKey("continued", bool)

_Resolved = tuple[web.UrlMappingMatchInfo | None, set[str]]


def unmet_expectation(request: web.BaseRequest) -> ExpectationFailed | None:
    """The error for an ``Expect`` header other than ``100-continue``, or None."""
    expect = request.headers.get("Expect")
    if expect is None or expect.strip().lower() == CONTINUE:
        return None
    return ExpectationFailed("only 'Expect: 100-continue' is supported")


async def send_continue(request: web.BaseRequest) -> None:
    """Tell a client that waits for it (``Expect: 100-continue``) to send the body now; once."""
    if request.get(_CONTINUED) or request.version < (1, 1):
        return
    if request.headers.get("Expect", "").strip().lower() == CONTINUE:
        request[_CONTINUED] = True
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not part of the response


async def continue_at_once(request: web.Request) -> None:
    """Expect handler for routes without credentials to check: 100 Continue straight away."""
    if unmet_expectation(request) is None:
        await send_continue(request)


async def defer_continue(request: web.Request) -> None:
    """Expect handler for routes with a body: send nothing yet; the handler sends 100 Continue
    once it has accepted the credentials (and for uploads the size), so a refused request never
    transfers its body (``gateway.server.http.body.send_continue``)."""


async def _refuse(request: web.Request) -> web.StreamResponse:
    error = unmet_expectation(request)
    assert error is not None  # only such requests are routed here
    raise error


class UnmetExpectations(web.AbstractResource):
    """Matches any request whose path no route matched and whose ``Expect`` is not understood,
    so that it goes through the middlewares to a JSON 417. It lists no routes: the API's
    description and the route table do not show it."""

    def __init__(self) -> None:
        # Named like the route label of unmatched requests, which the access log shows.
        super().__init__(name=UNMATCHED)
        self._route = web.ResourceRoute("*", _refuse, self, expect_handler=defer_continue)

    @property
    def canonical(self) -> str:
        # The router looks a resource up by the path prefix of its canonical form: this one is
        # tried for every path, after every route.
        return "/{unmatched}"

    def url_for(self, **kwargs: str) -> URL:
        raise RuntimeError("this resource has no URL")

    async def resolve(
        self, request: web.Request
    ) -> tuple[web.UrlMappingMatchInfo | None, set[str]]:
        if unmet_expectation(request) is None:
            return None, set()
        return web.UrlMappingMatchInfo({}, self._route), set()

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("this resource takes no prefix")

    def get_info(self) -> _InfoDict:
        return {}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        return iter(())
