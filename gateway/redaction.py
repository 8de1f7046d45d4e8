"""The one redaction used by every log line and message, server and client: nothing of a token,
a signature or a credential is ever written out."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[redacted]"

# Credentials that may travel inside text: URL tokens and S3 presigned-URL signatures (in query
# strings that a library quotes, e.g. aiohttp's log of a malformed request line), and the value
# of an Authorization header.
_SECRET_IN_TEXT = re.compile(
    r"((?:token|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature)=|"
    r"(?:Bearer|Basic)\s+)[^\s&'\"]+",
    re.IGNORECASE,
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every credential it carries, and each of ``secrets``, replaced by ``MASK``."""
    text = _SECRET_IN_TEXT.sub(rf"\1{MASK}", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text
