"""Sources: where an archive is kept, the URLs a client is handed, and the type it is served as."""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime

from gateway.error_codes import Code
from gateway.errors import BadRequest
from gateway.paths import SOURCE
from gateway.server.adapters.archive_tags import archive_from_tags
from gateway.server.domain.archive.facts import ArchiveFacts
from gateway.server.domain.storage import ObjectInfo

DEFAULT_CONTENT_TYPE = "application/gzip"
# The platform's deployer refuses archives served as octet-stream: store those as gzip. So is
# curl's default with -d/--data-binary, a form's type that no archive has (and a store that parses
# form bodies, as moto does, would never see the archive's bytes).
_GENERIC_TYPES = {
    "",
    "application/octet-stream",
    "binary/octet-stream",
    "application/x-www-form-urlencoded",
}
# RFC 9110 media type: token "/" token, then parameters; printable ASCII, tabs and spaces only.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ -~\t]*)?")
# Far longer than any real media type; keeps what is stored and echoed small.
MAX_CONTENT_TYPE_LENGTH = 255


def object_key(prefix: str, source_id: str) -> str:
    """The bucket key of a source's archive."""
    return f"{prefix}{source_id}"


def rfc3339(timestamp: float) -> str:
    """``timestamp`` (seconds since the epoch) as an RFC 3339 UTC time to the second."""
    return _rfc3339_second(int(timestamp // 1))


@functools.lru_cache(maxsize=16)
def _rfc3339_second(second: int) -> str:
    # Every source created within one second has the same expiry: formatted once.
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CreatedSource:
    """The body of ``201 Created``: the source at the top level and again as ``source`` (both
    shapes the platform's clients read), written from a template. Every value but the base URL
    is made of characters JSON writes as they are (a UUID, base64url tokens, an RFC 3339 time);
    the base URL is escaped once."""

    def __init__(self, base_url: str) -> None:
        self._base = json.dumps(base_url)[1:-1]

    def render(self, source_id: str, upload_token: str, download_token: str, expires: str) -> str:
        url = f"{self._base}{SOURCE.format(id=source_id)}?token="
        source = (
            f'"upload_url": "{url}{upload_token}", "download_url": "{url}{download_token}", '
            f'"id": "{source_id}", "expires_at": "{expires}"'
        )
        return f'{{{source}, "source": {{{source}}}}}'


def stored_content_type(header: str | None) -> str:
    """The type an upload is stored and served as: the client's, or gzip for a generic one.

    ``BadRequest`` for a value that is not a media type in printable ASCII: it is stored as
    S3 metadata and sent back in a response header, where other bytes do not travel."""
    value = (header or "").strip()
    if value and (len(value) > MAX_CONTENT_TYPE_LENGTH or not _MEDIA_TYPE.fullmatch(value)):
        raise BadRequest(
            "Content-Type must be a media type (type/subtype; parameters) in printable ASCII",
            code=Code.INVALID_CONTENT_TYPE,
        )
    if value.split(";")[0].strip().lower() in _GENERIC_TYPES:
        return DEFAULT_CONTENT_TYPE
    return value


def archive_of(info: ObjectInfo) -> ArchiveFacts | None:
    """What the archive check found in the stored object (None: stored without the check)."""
    return archive_from_tags(info.tags)
