"""Fetching `items_ref.url` sources: only hosts on the allowlist, https only, bounded in size and time."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from shared.errors import InvalidInputError, RetryableError
from shared.redact import url_without_query

MAX_SOURCE_BYTES = 256 * 1024 * 1024


class SourceFetcher:
    """GETs documents from allowlisted hosts (no SSRF through messages)."""

    def __init__(self, allowed_hosts: tuple[str, ...], *, timeout: float = 30.0, session: requests.Session | None = None) -> None:
        self._allowed = {h.lower() for h in allowed_hosts}
        self._timeout = timeout
        self._session = session or requests.Session()

    def check(self, url: str) -> str:
        """Raises InvalidInputError unless `url` is https (or http on loopback) on an allowlisted host."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        loopback = host in ("127.0.0.1", "localhost")
        if host not in self._allowed or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
            raise InvalidInputError(f"source {url_without_query(url)} is not on SOURCE_URL_ALLOWLIST (or not https)")
        return url

    def fetch(self, url: str) -> bytes:
        """The document's bytes.

        Raises:
            InvalidInputError: not allowed, not found, or too large.
            RetryableError: a transient failure.
        """
        self.check(url)
        where = url_without_query(url)
        try:
            with self._session.get(url, timeout=self._timeout, stream=True) as response:
                if response.status_code in (429, 500, 502, 503, 504):
                    raise RetryableError(f"GET {where}: {response.status_code}", status=response.status_code)
                if response.status_code >= 400:
                    raise InvalidInputError(f"GET {where}: {response.status_code}")
                chunks, total = [], 0
                for chunk in response.iter_content(1 << 20):
                    total += len(chunk)
                    if total > MAX_SOURCE_BYTES:
                        raise InvalidInputError(f"{where} is larger than {MAX_SOURCE_BYTES} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except (requests.Timeout, requests.ConnectionError):
            raise RetryableError(f"GET {where} failed to connect or timed out") from None
