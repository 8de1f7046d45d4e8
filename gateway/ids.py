"""The one spelling of a source id (a random UUID4, lowercase hex), for routes, URL parsing and
the OpenAPI document."""

from __future__ import annotations

import re

SOURCE_ID_REGEX = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SOURCE_ID = re.compile(SOURCE_ID_REGEX)
