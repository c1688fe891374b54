"""Reading from outside: `items_ref.url` documents and STAC API searches.

Every request, `next` link and redirect goes through `egress.GuardedSession`: only hosts on
SOURCE_URL_ALLOWLIST, https only (http only on loopback, for local runs), public addresses only,
bounded in size, time and item count. These requests never carry a credential: the GeoCatalog's own
search is read by its client instead (`planning.load_items`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from shared.errors import InvalidInputError
from shared.inputs.egress import GuardedSession
from shared.items import item_id_of
from shared.limits import Clock, Deadline
from shared.redact import url_without_query


@dataclass(frozen=True)
class SearchPage:
    """One page of a search: its features (a list, or the page is refused), where it came from, and
    whether it links to a next page."""

    features: list[Any]
    source: str = ""
    has_next: bool = False


@dataclass(frozen=True)
class SearchBounds:
    """How far one search may go (settings SEARCH_* and SOURCE_MAX_SECONDS, and the message's max_items)."""

    max_items: int
    max_pages: int = 2000
    max_empty_pages: int = 10
    max_idle_seconds: float = 60.0
    max_seconds: float = 900.0

    @classmethod
    def of(cls, settings: Any, max_items: int) -> SearchBounds:
        return cls(max_items=max_items, max_pages=settings.search_max_pages, max_empty_pages=settings.search_max_empty_pages,
                   max_idle_seconds=settings.search_max_idle_seconds, max_seconds=settings.source_max_seconds)


PageSource = Callable[[Deadline], Iterator[SearchPage]]


@dataclass
class BoundedSearch:
    """The new items of a search, page by page as they come (one page held at a time), at most
    `max_items`. An id already seen is skipped (a paging loop brings nothing new). It ends early when
    a bound is reached: too many pages, too many pages in a row or too long without a new item, or
    the source's total time; `stopped` then says which, naming the setting.

    Args:
        pages: opens the search's pages, each request bounded by the deadline it is given.
        bounds: the limits.
        clock: monotonic seconds (tests may pass their own).
    """

    pages: PageSource
    bounds: SearchBounds
    clock: Clock = time.monotonic
    stopped: str = ""
    repeated: int = 0
    sources: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        bounds = self.bounds
        deadline = Deadline(bounds.max_seconds, "SOURCE_MAX_SECONDS", self.clock)
        seen: set[str] = set()
        count, empty_pages, last_new = 0, 0, self.clock()
        for number, page in enumerate(self.pages(deadline), start=1):
            if page.source and page.source not in self.sources:
                self.sources.append(page.source)
            new = 0
            for feature in page.features:
                item_id = item_id_of(feature)
                if item_id and item_id in seen:
                    self.repeated += 1
                    continue
                if item_id:
                    seen.add(item_id)
                new, count = new + 1, count + 1
                yield feature
                if count >= bounds.max_items:
                    return
            empty_pages = 0 if new else empty_pages + 1
            last_new = self.clock() if new else last_new
            if not page.has_next:
                return
            self.stopped = self._stop_reason(number, empty_pages, self.clock() - last_new, deadline)
            if self.stopped:
                return

    def _stop_reason(self, pages: int, empty_pages: int, idle: float, deadline: Deadline) -> str:
        bounds = self.bounds
        if empty_pages >= bounds.max_empty_pages:
            return f"the search ended after {empty_pages} pages in a row brought no new item (SEARCH_MAX_EMPTY_PAGES)"
        if idle >= bounds.max_idle_seconds:
            return f"the search ended after {idle:.0f} s without a new item (SEARCH_MAX_IDLE_SECONDS {bounds.max_idle_seconds:g} s)"
        if pages >= bounds.max_pages:
            return f"the search ended after {pages} pages (SEARCH_MAX_PAGES) with more to read"
        if deadline.expired():
            return f"the search ended with more to read: reading it took longer than {deadline.describe()}"
        return ""

    @property
    def source(self) -> str:
        """The hosts that answered (after redirects), without query strings."""
        return ", ".join(self.sources)


class SourceFetcher:
    """GETs documents and runs searches on allowlisted hosts (no SSRF through messages).

    Args:
        session: the guarded session every request goes through.
        max_seconds: total time of one download (`open`), SOURCE_MAX_SECONDS.
    """

    def __init__(self, session: GuardedSession, *, max_seconds: float = 900.0) -> None:
        self._session = session
        self._max_seconds = max_seconds

    def check(self, url: str) -> str:
        """Raises InvalidInputError unless `url` may be fetched (see `GuardedSession.check`)."""
        return self._session.check(url).url

    def search_pages(self, url: str, params: dict[str, Any], *, method: str = "POST",
                     deadline: Deadline | None = None) -> Iterator[SearchPage]:
        """The pages of a STAC API item search, following `next` links, each request bounded in time
        (SOURCE_REQUEST_SECONDS, and `deadline`).

        Raises:
            InvalidInputError: not allowed, the API refused the search, or a page is not a page of items.
            LimitExceeded: a request took longer than its deadline.
            RetryableError: a transient failure.
        """
        request: tuple[str, str, dict[str, Any] | None] | None = (method.upper(), url, params)
        number = 0
        while request:
            number += 1
            verb, target, body = request
            if verb == "GET":
                page, where = self._session.get_json("GET", target, params=_query(body), deadline=deadline)
            else:
                page, where = self._session.get_json("POST", target, json=body or {}, deadline=deadline)
            shown = url_without_query(where)
            if not isinstance(page, dict):
                raise InvalidInputError(f"page {number} of the search at {shown} is not a JSON object")
            features = page.get("features")
            if not isinstance(features, list):
                raise InvalidInputError(f"page {number} of the search at {shown}: 'features' is "
                                        f"{_json_type(features)}, not a list of items")
            request = next_request(page, body)
            yield SearchPage(features, shown, has_next=request is not None)

    def read(self, url: str, *, max_bytes: int) -> bytes:
        """One document (a static catalog's), read whole: at most `max_bytes`, within SOURCE_REQUEST_SECONDS.

        Raises:
            InvalidInputError: not allowed, not found (4xx), or too large (LimitExceeded).
            LimitExceeded: the request took longer than SOURCE_REQUEST_SECONDS.
            RetryableError: a transient failure.
        """
        policy = self._session.policy
        deadline = Deadline(policy.request_seconds, policy.request_setting)
        with self._session.request("GET", url, stream=True, deadline=deadline) as response:
            return b"".join(self._session.iter_bytes(response, limit=max_bytes, deadline=deadline))

    @contextmanager
    def open(self, url: str) -> Iterator[tuple[Iterator[bytes], str]]:
        """(the document's bytes as chunks, the URL that answered), bounded in size.

        Raises:
            InvalidInputError: not allowed, not found, or too large.
            LimitExceeded: the download took longer than SOURCE_MAX_SECONDS.
            RetryableError: a transient failure.
        """
        deadline = Deadline(self._max_seconds, "SOURCE_MAX_SECONDS")
        with self._session.request("GET", url, stream=True, deadline=deadline) as response:
            yield self._session.iter_bytes(response, deadline=deadline), response.url


def _query(params: dict[str, Any] | None) -> dict[str, str]:
    return {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in (params or {}).items()}


def next_request(page: dict[str, Any], body: dict[str, Any] | None) -> Any:
    """The STAC API `next` link as (method, url, body), or None on the last page."""
    links = page.get("links")
    link = next((ln for ln in links if isinstance(ln, dict) and ln.get("rel") == "next"), None) if isinstance(links, list) else None
    if link is None or not isinstance(link.get("href"), str):
        return None
    link_method = str(link.get("method", "GET")).upper()
    if link_method == "POST":
        next_body = link.get("body") if isinstance(link.get("body"), dict) else {}
        return "POST", link["href"], ({**(body or {}), **next_body} if link.get("merge") else next_body)
    return "GET", link["href"], None


def _json_type(value: Any) -> str:
    return {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
            dict: "an object"}.get(type(value), type(value).__name__)
