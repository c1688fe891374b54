"""Keep secrets out of logs, rows and exceptions: SAS tokens live in query strings."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def url_without_query(url: str) -> str:
    """`https://h/p?sig=...` -> `https://h/p` (also drops any user:password@ and fragment)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_URL_WITH_QUERY = re.compile(r"(https?://[^\s\"'<>?]+)\?[^\s\"'<>]*")


def urls_without_queries(text: str) -> str:
    """Every URL in free text (logs, error messages) without its query string."""
    return _URL_WITH_QUERY.sub(r"\1", text)
