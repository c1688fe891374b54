"""Keep secrets out of logs, rows and exceptions: SAS tokens live in query strings.

`redacted` is applied where text is stored (every free-text property of a status row, operation logs
and rejection lists in blobs): URLs lose their query string (any case of scheme), and whatever looks
like a secret outside a URL is masked: a SAS signature (`sig=...`, e.g. a bare `sv=...&sig=...`), a
storage key (`AccountKey=...`), a bearer token.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def url_without_query(url: str) -> str:
    """`https://h/p?sig=...` -> `https://h/p` (also drops any user:password@ and fragment)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# A query ends at whitespace, a quote, `<>`, or a backslash (as in a JSON string's `\"`).
_URL_WITH_QUERY = re.compile(r"(https?://[^\s\"'<>?\\]+)\?[^\s\"'<>\\]*", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"\b(sig|signature|accountkey|sharedaccesskey|sharedaccesssignature|client_secret|access_token)"
                           r"(\s*=\s*)[^\s\"'<>&;\\,]+", re.IGNORECASE)
_BEARER = re.compile(r"\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)


def redacted(text: str) -> str:
    """`text` with every URL's query string removed and every other secret-looking value masked."""
    if not text:
        return text
    text = _URL_WITH_QUERY.sub(r"\1", text)
    text = _SECRET_VALUE.sub(rf"\1\2{MASK}", text)
    return _BEARER.sub(rf"\1 {MASK}", text)


# The older name: every caller that strips URLs in free text wants the other secrets gone too.
urls_without_queries = redacted
