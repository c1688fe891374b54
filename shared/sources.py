"""Reading from outside: `items_ref.url` documents and STAC API searches.

Every request, `next` link and redirect goes through `egress.GuardedSession`: only hosts on
SOURCE_URL_ALLOWLIST, https only (http only on loopback, for local runs), public addresses only,
bounded in size, time and item count. These requests never carry a credential: the GeoCatalog's own
search is read by its client instead (`planning.load_items`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shared.egress import GuardedSession
from shared.redact import url_without_query


@dataclass(frozen=True)
class SearchResult:
    """The items found, and where they came from: the hosts that answered (after redirects)."""

    items: list[dict[str, Any]]
    source: str


class SourceFetcher:
    """GETs documents and runs searches on allowlisted hosts (no SSRF through messages)."""

    def __init__(self, session: GuardedSession) -> None:
        self._session = session

    def check(self, url: str) -> str:
        """Raises InvalidInputError unless `url` may be fetched (see `GuardedSession.check`)."""
        return self._session.check(url).url

    def search(self, url: str, params: dict[str, Any], *, method: str = "POST", max_items: int = 1000) -> SearchResult:
        """Items from a STAC API item search, following `next` links, at most `max_items`.

        Raises:
            InvalidInputError: not allowed, or the API refused the search.
            RetryableError: a transient failure.
        """
        items: list[dict[str, Any]] = []
        used: list[str] = []
        request: tuple[str, str, dict[str, Any] | None] | None = (method.upper(), url, params)
        while request and len(items) < max_items:
            verb, target, body = request
            if verb == "GET":
                page, where = self._session.get_json("GET", target, params=_query(body))
            else:
                page, where = self._session.get_json("POST", target, json=body or {})
            if not isinstance(page, dict):
                break
            shown = url_without_query(where)
            if shown not in used:
                used.append(shown)
            items += [f for f in page.get("features", []) if isinstance(f, dict)][: max_items - len(items)]
            request = next_request(page, verb, body)
        return SearchResult(items, ", ".join(used))

    @contextmanager
    def open(self, url: str) -> Iterator[tuple[Iterator[bytes], str]]:
        """(the document's bytes as chunks, the URL that answered), bounded in size.

        Raises:
            InvalidInputError: not allowed, not found, or too large.
            RetryableError: a transient failure.
        """
        with self._session.request("GET", url, stream=True) as response:
            yield self._session.iter_bytes(response), response.url


def _query(params: dict[str, Any] | None) -> dict[str, str]:
    return {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in (params or {}).items()}


def next_request(page: dict[str, Any], method: str, body: dict[str, Any] | None) -> Any:
    """The STAC API `next` link as (method, url, body), or None on the last page."""
    link = next((ln for ln in page.get("links") or [] if isinstance(ln, dict) and ln.get("rel") == "next"), None)
    if link is None or not isinstance(link.get("href"), str):
        return None
    link_method = str(link.get("method", "GET")).upper()
    if link_method == "POST":
        next_body = link.get("body") or {}
        return "POST", link["href"], ({**(body or {}), **next_body} if link.get("merge") else next_body)
    return "GET", link["href"], None
