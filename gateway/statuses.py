"""The platform's deployment statuses and the ones that end a deployment: one spelling for the
server (deployer events, records, the OpenAPI document) and the client (which follows a
deployment to its final status), as ``gateway.ids`` is for app names."""

from __future__ import annotations

# The platform's status vocabulary, in the order a deployment usually goes through it.
STATUSES = (
    "queued",
    "building",
    "pushing",
    "starting",
    "success",
    "aborted",
    "build-error",
    "crashed-error",
    "timeout-error",
    "hook-error",
)
# The final statuses: the deployment will not change any more.
TERMINAL_STATUSES = frozenset(
    {"success", "aborted", "build-error", "crashed-error", "timeout-error", "hook-error"}
)
