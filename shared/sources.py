"""Reading from outside: `items_ref.url` documents and STAC API searches.

Only hosts on SOURCE_URL_ALLOWLIST, https only (http only on loopback, for local runs), bounded in
size, time and item count, and every `next` link is checked again: a message cannot make the app
fetch arbitrary URLs.
"""

from __future__ import annotations

from typing import Any
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

    def search(self, url: str, params: dict[str, Any], *, method: str = "POST", max_items: int = 1000) -> list[dict[str, Any]]:
        """Items from a STAC API item search, following `next` links, at most `max_items`.

        Raises:
            InvalidInputError: not allowed, or the API refused the search.
            RetryableError: a transient failure.
        """
        items: list[dict[str, Any]] = []
        request: tuple[str, str, dict[str, Any] | None] = (method.upper(), url, params)
        while request and len(items) < max_items:
            verb, target, body = request
            page = self._json(verb, self.check(target), body)
            items += [f for f in page.get("features", []) if isinstance(f, dict)][: max_items - len(items)]
            request = _next_request(page, verb, body)
        return items

    def _json(self, method: str, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        where = url_without_query(url)
        try:
            if method == "GET":
                query = {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in (body or {}).items()}
                response = self._session.get(url, params=query, timeout=self._timeout)
            else:
                response = self._session.post(url, json=body or {}, timeout=self._timeout)
        except (requests.Timeout, requests.ConnectionError):
            raise RetryableError(f"{method} {where} failed to connect or timed out") from None
        check_status(response, f"{method} {where}")
        try:
            return response.json()
        except ValueError:
            raise InvalidInputError(f"{method} {where} did not answer JSON") from None

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
                check_status(response, f"GET {where}")
                chunks, total = [], 0
                for chunk in response.iter_content(1 << 20):
                    total += len(chunk)
                    if total > MAX_SOURCE_BYTES:
                        raise InvalidInputError(f"{where} is larger than {MAX_SOURCE_BYTES} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except (requests.Timeout, requests.ConnectionError):
            raise RetryableError(f"GET {where} failed to connect or timed out") from None


def check_status(response: requests.Response, what: str) -> None:
    """Raises RetryableError for 429/5xx and InvalidInputError for other 4xx answers of a source."""
    status = response.status_code
    if status in (429, 500, 502, 503, 504):
        raise RetryableError(f"{what}: {status}", status=status)
    if status >= 400:
        raise InvalidInputError(f"{what}: {status}")


def _next_request(page: dict[str, Any], method: str, body: dict[str, Any] | None) -> Any:
    """The STAC API `next` link as (method, url, body), or None on the last page."""
    link = next((ln for ln in page.get("links") or [] if isinstance(ln, dict) and ln.get("rel") == "next"), None)
    if link is None or not link.get("href"):
        return None
    link_method = str(link.get("method", "GET")).upper()
    if link_method == "POST":
        next_body = link.get("body") or {}
        return "POST", link["href"], ({**(body or {}), **next_body} if link.get("merge") else next_body)
    return "GET", link["href"], None
