"""A deployment job and where it goes: the ``Forwarder`` interface that
``gateway.server.adapters.deployments.forwarders`` implements (HTTP, SQS) and the create
handler calls."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Job:
    """A deployment job: ``body`` is the exact JSON the deployer receives (and the HMAC covers)."""

    id: str
    app: str
    body: bytes

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> Job:
        """Serialise ``fields`` (which must hold ``id`` and ``app``) once, compactly."""
        body = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(str(fields["id"]), str(fields["app"]), body)


class Forwarder(Protocol):
    """Where accepted deployments go. The handler does not know which one it has."""

    async def forward(self, job: Job) -> dict[str, Any] | None:
        """Deliver ``job``; return the deployer's JSON object answer, or None if it gave none.

        Raises ``GatewayError`` subclasses only."""
