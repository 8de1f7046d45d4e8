"""The app's routes, registered from the route table (``gateway.server.http.routes``): each
route's handler is found by its name on ``Handlers``, the handler objects the app factory built."""

from __future__ import annotations

import operator
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.config import Config
from gateway.server.http.deployments.create import DeploymentHandlers
from gateway.server.http.deployments.records import DeploymentRecordHandlers
from gateway.server.http.deployments.websocket import DeploymentsStream
from gateway.server.http.expect import UnmetExpectations, continue_at_once, defer_continue
from gateway.server.http.platform import PlatformHandlers
from gateway.server.http.probes import Probes
from gateway.server.http.resumable import protocol_dispatch
from gateway.server.http.routes import Route, routes_of
from gateway.server.http.sources import SourceHandlers
from gateway.server.http.tus import TusHandlers
from gateway.server.http.upload_draft import DraftHandlers

# Every route answers an unknown Expect through the middlewares (gateway.server.http.expect);
# a route with a body sends 100 Continue only once it has accepted the credentials.
EXPECT_HANDLERS = {"at_once": continue_at_once, "after_credentials": defer_continue}


@dataclass(frozen=True)
class Handlers:
    """What the route table's ``handler`` names resolve on."""

    sources: SourceHandlers
    tus: TusHandlers
    draft: DraftHandlers
    deploys: DeploymentHandlers
    records: DeploymentRecordHandlers
    platform: PlatformHandlers
    stream: DeploymentsStream
    probes: Probes
    openapi: Handler

    # The methods the plain upload (or tus) and the IETF draft share: the request's headers say
    # which protocol it speaks.
    @property
    def on_source(self) -> Handler:
        return protocol_dispatch(self.tus.create, self.tus.create, self.draft.create)

    @property
    def upload_head(self) -> Handler:
        return protocol_dispatch(self.tus.head, self.tus.head, self.draft.offset)

    @property
    def upload_patch(self) -> Handler:
        return protocol_dispatch(self.tus.patch, self.tus.patch, self.draft.patch)

    @property
    def upload_delete(self) -> Handler:
        return protocol_dispatch(self.tus.delete, self.tus.delete, self.draft.delete)

    def of(self, route: Route) -> Handler:
        handler: Handler = operator.attrgetter(route.handler)(self)
        return handler


def add_routes(router: web.UrlDispatcher, config: Config, handlers: Handlers) -> None:
    """Register the routes ``config`` serves, in the table's order; then the resource that
    answers an unmet ``Expect`` on paths no route matched."""
    for route in routes_of(config):
        router.add_route(
            route.method,
            route.router_path,
            handlers.of(route),
            expect_handler=EXPECT_HANDLERS[route.expect],
        )
    router.register_resource(UnmetExpectations())
