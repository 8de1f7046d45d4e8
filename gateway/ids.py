"""The one spelling of a source id and of a deployment id (random UUID4s, lowercase hex), for
routes, URL parsing and the OpenAPI document; and of an app name and a git_ref, for the server's
checks and the client's (which checks before it packs or uploads anything)."""

from __future__ import annotations

import os
import re

SOURCE_ID_REGEX = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SOURCE_ID = re.compile(SOURCE_ID_REGEX)


def new_source_id() -> str:
    """A random UUID4 as ``str(uuid.uuid4())`` writes it, from 16 random bytes of the OS as
    ``uuid4`` takes them, without building a ``UUID`` (a third of the cost of a create)."""
    digits = os.urandom(16).hex()
    variant = "89ab"[int(digits[16], 16) & 3]  # RFC 4122: the variant's two bits are 10
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"


# The platform's app names: lowercase letters, digits and dashes, 3 to 48 characters, starting
# with a letter and not ending with a dash (a leading dash would read as an option on a command
# line that takes the name).
APP_NAME_REGEX = r"[a-z][a-z0-9-]{1,46}[a-z0-9]"
APP_NAME = re.compile(APP_NAME_REGEX)
APP_NAME_RULE = (
    "must be 3 to 48 lowercase letters, digits or dashes, starting with a letter and not ending"
    " with a dash"
)


# git_ref becomes an image tag on the platform; longer refs are not real ones.
MAX_GIT_REF_LENGTH = 255


def git_ref_errors(git_ref: str) -> list[str]:
    """What is wrong with ``git_ref``, in the words of a 422's ``errors.git_ref``; [] if nothing."""
    errors = []
    if len(git_ref) > MAX_GIT_REF_LENGTH:
        errors.append(f"must be at most {MAX_GIT_REF_LENGTH} characters")
    if not git_ref.isprintable():
        errors.append("must contain printable characters only")
    if git_ref.startswith("-"):
        errors.append("must not start with '-'")
    return errors


# A deployment id: a random UUID4 too, made by the gateway when it records a deployment. A name of
# its own, so that a change to either id's form is one line.
DEPLOYMENT_ID_REGEX = SOURCE_ID_REGEX
DEPLOYMENT_ID = re.compile(DEPLOYMENT_ID_REGEX)


def new_deployment_id() -> str:
    return new_source_id()
