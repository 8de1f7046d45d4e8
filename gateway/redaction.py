"""The one redaction used by every log line and message, server and client: nothing of a token,
a signature or a credential is ever written out."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

MASK = "[redacted]"

# Parameters whose values are credentials: the URL tokens and the parts of S3 presigned URLs
# (X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token, the older Signature). A name is
# judged as a server reads it, percent-decoded and in any case: ``tok%65n=`` is ``token=`` to
# aiohttp, so it is masked too.
_SECRET_NAME_ENDINGS = ("token", "signature", "credential")
# A name=value pair as a query string, or a library quoting a request line, carries it. The value
# stops where another pair could start (``next=/x?token=...`` holds a token too).
_PARAMETER = re.compile(r"([^\s&?;=/'\"]+)=([^\s&?;='\"]*)")
# The value of an Authorization header.
_AUTHORIZATION = re.compile(r"((?:Bearer|Basic)\s+)[^\s&'\"]+", re.IGNORECASE)


def _mask_parameter(match: re.Match[str]) -> str:
    name = match.group(1)
    if unquote_plus(name).strip().lower().endswith(_SECRET_NAME_ENDINGS):
        return f"{name}={MASK}"
    return match.group(0)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every credential it carries, and each of ``secrets``, replaced by ``MASK``."""
    text = _PARAMETER.sub(_mask_parameter, text)
    text = _AUTHORIZATION.sub(rf"\1{MASK}", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text
