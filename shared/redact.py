"""Keep secrets out of logs, rows and exceptions: SAS tokens live in query strings."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def url_without_query(url: str) -> str:
    """`https://h/p?sig=...` -> `https://h/p` (also drops any user:password@ and fragment)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
