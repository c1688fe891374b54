"""The GeoCatalog REST client: submit items, follow operations, read logs, list/get/replace/delete items.

HTTP statuses become `shared.errors` types here and nowhere else. Nothing logged or raised by this
module carries a token or a URL query string.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter

from shared import telemetry
from shared.catalog.auth import TokenProvider, default_token_provider
from shared.catalog.pacing import GroupPacer, Pacer
from shared.catalog.transport import configure_session
from shared.errors import (
    RETRYABLE_STATUSES,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    RejectedByServiceError,
    RetryableError,
)
from shared.ids import COLLECTION_ID, ITEM_ID, check_collection_id, check_item_id  # noqa: F401 - re-exported
from shared.redact import redacted, url_without_query
from shared.settings import GA_API_VERSION, Settings

log = logging.getLogger(__name__)

LEGACY_API_VERSION = "2024-01-31-preview"
TERMINAL_STATES = frozenset({"Succeeded", "Failed", "Canceled"})


@dataclass(frozen=True)
class ApiLayout:
    """Where things live for one api-version; the only place that knows the generations apart."""

    api_version: str

    @property
    def legacy(self) -> bool:
        return self.api_version == LEGACY_API_VERSION

    @property
    def stac(self) -> str:
        return "/api" if self.legacy else "/stac"

    def operation_path(self, operation_id: str) -> str:
        return f"/inma/operations/{operation_id}"

    def logs_path(self, collection_id: str, operation_id: str) -> str | None:
        """The preview generation's logs route; GA has none (its logs are the operation itself)."""
        if not self.legacy:
            return None
        return f"/api/collections/{collection_id}/operations/{operation_id}/logs"


@dataclass(frozen=True)
class OperationRef:
    """What a 202 gives back: the operation's id and the absolute URL to poll."""

    id: str
    url: str


@dataclass(frozen=True)
class ItemError:
    """One item's failure inside an operation, when the service names it."""

    item_id: str
    code: str
    message: str


@dataclass(frozen=True)
class Operation:
    """A typed view of the Operation resource (counters as ints, error flattened)."""

    id: str
    status: str
    type: str = ""
    collection_id: str = ""
    creation_time: str = ""
    total_items: int | None = None
    succeeded_items: int | None = None
    failed_items: int | None = None
    pending_items: int | None = None
    error_code: str = ""
    error_message: str = ""
    item_errors: tuple[ItemError, ...] = ()
    history: tuple[dict[str, Any], ...] = field(default=())
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATES

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Operation:
        info = body.get("additionalInformation") or {}
        history = tuple(body.get("statusHistory") or ())
        error = (body.get("error") or {}).get("error") or {}
        last_failure = next((h for h in reversed(history) if h.get("errorCode")), {})
        details = tuple(
            ItemError(str(d.get("target", "")), str(d.get("code", "")), str(d.get("message", "")))
            for d in error.get("details") or ()
            if isinstance(d, dict)
        )
        return cls(
            id=str(body.get("id") or body.get("operationId") or ""),
            status=str(body.get("status", "")),
            type=str(body.get("type", "")),
            collection_id=str(body.get("collectionId", "")),
            creation_time=str(body.get("creationTime", "")),
            total_items=_int(info.get("TotalItems")),
            succeeded_items=_int(info.get("TotalSuccessfulItems")),
            failed_items=_int(info.get("TotalFailedItems")),
            pending_items=_int(info.get("TotalPendingItems")),
            error_code=str(error.get("code") or last_failure.get("errorCode") or ""),
            error_message=str(error.get("message") or last_failure.get("errorMessage") or ""),
            item_errors=details,
            history=history,
            raw=body,
        )


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class SearchCursor:
    """Where a search goes on: its page's `next` link (href, method, body)."""

    href: str
    method: str = "GET"
    body: dict[str, Any] | None = None

    def to_json(self) -> str:
        return orjson.dumps({"href": self.href, "method": self.method, "body": self.body}).decode()

    @classmethod
    def from_json(cls, text: str) -> SearchCursor:
        data = orjson.loads(text)
        body = data.get("body")
        return cls(str(data["href"]), str(data.get("method") or "GET").upper(), body if isinstance(body, dict) else None)


def _page(response: requests.Response) -> tuple[list[Any], SearchCursor | None]:
    """A search page's items and its `next` link (None when there is none)."""
    page = response.json()
    features = page.get("features") if isinstance(page, dict) else None
    if not isinstance(features, list):
        raise InvalidInputError("the GeoCatalog answered a search with a page that has no list of features")
    links = page.get("links")
    next_link = next((link for link in links if isinstance(link, dict) and link.get("rel") == "next"), None) \
        if isinstance(links, list) else None
    if next_link is None or not isinstance(next_link.get("href"), str):
        return features, None
    body = next_link.get("body")
    return features, SearchCursor(next_link["href"], str(next_link.get("method", "GET")).upper(),
                                  body if isinstance(body, dict) else None)


class GeoCatalogClient:
    """A pooled, token-authenticated client of one GeoCatalog.

    Args:
        endpoint: the catalog's base URL.
        credential: gives the bearer token (refreshed by the provider before expiry).
        api_version: picks the path layout (see `ApiLayout`).
        session: a `requests.Session` to reuse; one with a connection pool is made if omitted.
        timeout: connect and read timeout, seconds.
        verify: TLS verification (True, False, or a CA bundle path); None: the session's (the environment's bundle).
        pacer: paces every request (see `shared.catalog.pacing`); unpaced if omitted.
    """

    def __init__(
        self,
        endpoint: str,
        credential: TokenProvider,
        *,
        api_version: str = GA_API_VERSION,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        verify: bool | str | None = None,
        pacer: Pacer | GroupPacer | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.layout = ApiLayout(api_version)
        self._credential = credential
        self._timeout = timeout
        self._verify = verify
        self._session = session or _pooled_session()
        self.pacer = pacer or Pacer(0)
        origin = urlsplit(self.endpoint)
        self._origin = (origin.scheme, origin.netloc)

    @classmethod
    def from_settings(cls, settings: Settings) -> GeoCatalogClient:
        return cls(
            settings.geocatalog_endpoint,
            default_token_provider(settings.geocatalog_token),
            api_version=settings.geocatalog_api_version,
            timeout=settings.http_timeout_seconds,
            verify=settings.geocatalog_ca_bundle or None,
            pacer=GroupPacer.from_settings(settings),
        )

    # ----- items --------------------------------------------------------------------------------

    def create_items(self, collection_id: str, body: bytes | dict[str, Any]) -> OperationRef:
        """POST an Item or FeatureCollection; returns the operation to poll.

        Raises:
            RetryableError, RejectedByServiceError, NotFoundError, AuthenticationError, InvalidInputError.
        """
        path = f"{self.layout.stac}/collections/{check_collection_id(collection_id)}/items"
        return self._accepted(self._send("POST", path, body=body))

    def replace_item(self, collection_id: str, item: dict[str, Any]) -> OperationRef:
        """PUT (create or replace) one item; returns the operation to poll."""
        item_id = check_item_id(item.get("id", ""))
        path = f"{self.layout.stac}/collections/{check_collection_id(collection_id)}/items/{item_id}"
        return self._accepted(self._send("PUT", path, body=item))

    def delete_item(self, collection_id: str, item_id: str) -> OperationRef:
        """DELETE one item (asynchronous, 202); returns the operation to poll."""
        path = f"{self.layout.stac}/collections/{check_collection_id(collection_id)}/items/{check_item_id(item_id)}"
        return self._accepted(self._send("DELETE", path))

    def get_item(self, collection_id: str, item_id: str) -> dict[str, Any]:
        path = f"{self.layout.stac}/collections/{check_collection_id(collection_id)}/items/{check_item_id(item_id)}"
        return self._send("GET", path).json()

    def list_items(self, collection_id: str, *, limit: int = 100) -> Iterator[dict[str, Any]]:
        """Every item of a collection, following `next` links."""
        path = f"{self.layout.stac}/collections/{check_collection_id(collection_id)}/items"
        response = self._send("GET", path, params={"limit": str(limit)})
        yield from self._follow_pages(response)

    def search_ids(self, collection_id: str, item_ids: list[str]) -> Iterator[dict[str, Any]]:
        """The stored items among `item_ids` (POST search, following `next` links)."""
        body = {"collections": [check_collection_id(collection_id)], "ids": item_ids, "limit": min(len(item_ids), 1000)}
        yield from self._follow_pages(self._send("POST", f"{self.layout.stac}/search", body=body))

    def search_pages(self, params: dict[str, Any], *, url: str = "", method: str = "POST") -> Iterator[tuple[list[Any], bool]]:
        """The pages of a STAC item search of this catalog, one at a time: (its items, whether a `next` link
        follows). The caller decides when to stop, so memory holds one page.

        `url` (default: the catalog's own /search) must be on the catalog's endpoint: the token goes nowhere else.

        Raises:
            InvalidInputError: `url` is outside the endpoint, or a page is not a page of items.
            RetryableError, RejectedByServiceError, AuthenticationError.
        """
        target = self._own_url(url) if url else f"{self.endpoint}{self.layout.stac}/search"
        query = {} if "api-version=" in target else {"api-version": self.layout.api_version}
        if method.upper() == "GET":
            query.update({k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in params.items()})
            response = self._send("GET", _with_query(target, query), absolute=True)
        else:
            response = self._send("POST", _with_query(target, query), body=params, absolute=True)
        return self._pages(response)

    def _follow_pages(self, response: requests.Response) -> Iterator[dict[str, Any]]:
        for features, _ in self._pages(response):
            yield from features

    def search_page(self, params: dict[str, Any], *, after: SearchCursor | None = None) -> tuple[list[Any], SearchCursor | None]:
        """One page of a search of this catalog (`params`), or the page `after` names, and the cursor of the
        page that follows (None at the end). A cursor is plain data: a step that lists a big collection
        keeps it on a row and goes on in another invocation. It names this catalog's endpoint only.

        Raises:
            InvalidInputError: the cursor leaves the endpoint, or a page is not a page of items.
            RetryableError, RejectedByServiceError, AuthenticationError.
        """
        if after is None:
            target = f"{self.endpoint}{self.layout.stac}/search"
            response = self._send("POST", _with_query(target, {"api-version": self.layout.api_version}), body=params, absolute=True)
        else:
            response = self._send(after.method, self._own_url(after.href), body=after.body, absolute=True)
        return _page(response)

    def _pages(self, response: requests.Response) -> Iterator[tuple[list[Any], bool]]:
        while True:
            features, cursor = _page(response)
            if cursor is None:
                yield features, False
                return
            yield features, True
            response = self._send(cursor.method, self._own_url(cursor.href), body=cursor.body, absolute=True)

    # ----- collections --------------------------------------------------------------------------

    def get_collection(self, collection_id: str) -> dict[str, Any]:
        """Raises NotFoundError when the catalog has no such collection."""
        return self._send("GET", f"{self.layout.stac}/collections/{check_collection_id(collection_id)}").json()

    def create_collection(self, collection: dict[str, Any]) -> OperationRef | None:
        """POST a collection: an operation to poll (202) or None when created at once (201)."""
        check_collection_id(collection.get("id", ""))
        response = self._send("POST", f"{self.layout.stac}/collections", body=collection)
        return self._accepted(response) if response.status_code == 202 else None

    # ----- operations -----------------------------------------------------------------------------

    def get_operation(self, operation: OperationRef | str) -> Operation:
        """The operation's current state, from its URL (or id)."""
        if isinstance(operation, OperationRef):
            url = operation.url
        else:
            url = f"{self.endpoint}{self.layout.operation_path(operation)}?api-version={self.layout.api_version}"
        return Operation.from_json(self._send("GET", self._own_url(url), absolute=True).json())

    def cancel_operation(self, operation_id: str) -> None:
        """Ask the service to cancel an operation (DELETE, 204). One that has ended keeps its end; whether a
        Running one stops at once or only after Canceling is not documented: read it again to know."""
        self._send("DELETE", self.layout.operation_path(quote(operation_id, safe="")))

    def get_logs(self, collection_id: str, operation: Operation) -> str:
        """The operation's logs: the preview route's text, or on GA the operation itself as JSON."""
        path = self.layout.logs_path(check_collection_id(collection_id), operation.id)
        if path is None:
            summary = {k: operation.raw[k] for k in ("status", "statusHistory", "error", "additionalInformation") if k in operation.raw}
            return orjson.dumps(summary).decode()
        return self._send("GET", path).text

    # ----- plumbing -------------------------------------------------------------------------------

    def _own_url(self, url: str) -> str:
        """Refuse URLs (from messages or links) outside our catalog: our token must not travel elsewhere."""
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) != self._origin:
            raise InvalidInputError(f"refusing URL outside the GeoCatalog endpoint: {url_without_query(url)}")
        return url

    def _accepted(self, response: requests.Response) -> OperationRef:
        url = response.headers.get("operation-location") or response.headers.get("location")
        body = response.json() if response.content else {}
        operation_id = str(body.get("id") or body.get("operationId") or "")
        if url:
            operation_id = operation_id or urlsplit(url).path.rsplit("/", 1)[-1]
            return OperationRef(operation_id, url)
        if operation_id:
            path = self.layout.operation_path(operation_id)
            return OperationRef(operation_id, f"{self.endpoint}{path}?api-version={self.layout.api_version}")
        raise RejectedByServiceError(response.status_code, "NoOperation", "accepted without an operation reference")

    def _send(
        self,
        method: str,
        path_or_url: str,
        *,
        body: bytes | dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        absolute: bool = False,
    ) -> requests.Response:
        url = path_or_url if absolute else f"{self.endpoint}{path_or_url}"
        query = None if absolute else {"api-version": self.layout.api_version, **(params or {})}
        headers = {"Authorization": f"Bearer {self._credential.token()}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        self.pacer.acquire()
        with telemetry.catalog_call(call_kind(method, url)) as call:
            try:
                response = self._session.request(
                    method, url, params=query, data=data, headers=headers, timeout=self._timeout, verify=self._verify,
                    allow_redirects=False,
                )
            except requests.Timeout:
                call.code = "Timeout"
                raise RetryableError(f"{method} {url_without_query(url)} timed out") from None
            except requests.ConnectionError:
                call.code = "ConnectionError"
                raise RetryableError(f"{method} {url_without_query(url)}: connection failed") from None
            call.code = str(response.status_code)
        if response.status_code == 429:
            self.pacer.throttled()
        if response.status_code < 300:
            return response
        if response.status_code < 400:  # never followed: a redirect could lead the token elsewhere
            raise RejectedByServiceError(response.status_code, "UnexpectedRedirect",
                                         f"{method} {url_without_query(url)} answered with a redirect, which is not followed")
        raise _error_for(method, url, response)


def call_kind(method: str, url: str) -> str:
    """What a request does, for metrics and spans: the method and the resource, never an id ("GET operation")."""
    parts = [part for part in urlsplit(url).path.split("/") if part]
    tail = parts[1:]  # after the layout's root: stac, api or inma
    resource = "other"
    if tail[:1] == ["operations"]:
        resource = "operation"
    elif tail == ["search"]:
        resource = "search"
    elif tail[:1] == ["collections"]:
        if len(tail) <= 2:
            resource = "collections" if len(tail) == 1 else "collection"
        elif tail[2] == "items":
            resource = "items" if len(tail) == 3 else "item"
        elif tail[2] == "operations":
            resource = "logs"
    return f"{method.upper()} {resource}"


def _with_query(url: str, query: dict[str, str]) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(query)}" if query else url


def _error_for(method: str, url: str, response: requests.Response) -> Exception:
    status = response.status_code
    code, message = _error_body(response)
    where = f"{method} {url_without_query(url)}"
    if status in (401, 403):
        return AuthenticationError(status, code)
    if status in RETRYABLE_STATUSES:
        return RetryableError(f"{where}: {status} {code}", retry_after=_retry_after(response), status=status)
    if status == 404:
        return NotFoundError(status, code, message)
    return RejectedByServiceError(status, code, message)


def _error_body(response: requests.Response) -> tuple[str, str]:
    code = response.headers.get("X-Ms-Error-Code", "")
    message = ""
    try:
        error = response.json().get("error", {})
        code = code or str(error.get("code", ""))
        message = str(error.get("message", ""))
    except (ValueError, AttributeError):
        message = response.text[:500]
    return redacted(code) or f"Http{response.status_code}", redacted(message)  # the service may echo signed hrefs


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _pooled_session() -> requests.Session:
    session = configure_session(requests.Session())
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def operation_seconds(operation: Operation) -> float | None:
    """The operation's duration by the service's clock, from creation to finish; None when unknown."""
    raw = operation.raw
    started = raw.get("creationTime") or next(iter(operation.history), {}).get("timestamp")
    finished = raw.get("finishTime") or (operation.history[-1].get("timestamp") if operation.is_terminal and
                                          operation.history else None)
    if not started or not finished:
        return None
    try:
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def learnt_seconds(operation: Operation) -> float | None:
    """The length to learn a collection's speed from: that of an operation that ran to its end (Succeeded or
    Failed; a Canceled one stopped early), else None."""
    return operation_seconds(operation) if operation.status in ("Succeeded", "Failed") else None


def operation_end(operation: Operation) -> datetime | None:
    """When a terminal operation finished by the service's clock (UTC when the service gives no offset); None when unknown."""
    raw = operation.raw
    finished = raw.get("finishTime") or (operation.history[-1].get("timestamp") if operation.is_terminal and
                                          operation.history else None)
    try:
        end = datetime.fromisoformat(finished) if isinstance(finished, str) else None
    except ValueError:
        return None
    return end.replace(tzinfo=UTC) if end is not None and end.tzinfo is None else end
