"""Walking a static STAC catalog: from a root `catalog.json` / `collection.json`, its items, breadth-first.

The walk follows `child` links (catalogs and collections) and `item` links (items) of each document, level
by level, and yields each item in link order; it holds one catalog document at a time, the hrefs of the
documents visited (each is visited once, so a cycle of links ends) and the queue of documents to visit.
The item documents of one catalog's links are fetched `CatalogLimits.fetch_workers` at a time (a fetch is
mostly waiting on the network), each through the same fetch and checks as alone; catalogs are fetched
one after another.
Items are leaves: their links are not followed, and they are not remembered (an item linked from two
catalogs is yielded twice; the pipeline's duplicate handling sees it as any duplicate id).

Where it may go. The root is an https URL or a blob name `container/path`. Every href is resolved against
the href of the document that holds it, with `urllib.parse.urljoin` (so `./a/b.json`, `../c.json` and
`/x.json` mean what they mean on the web; a blob name is resolved as the path of a URL). A link that
resolves outside the root's origin (scheme, host and port) or, for a blob root, outside the folder of
the root document in its container (`container/a/catalog.json` may lead to `container/a/...` only), is
not fetched: it is reported like an unreachable link. The fetch is injected, so every
request still goes through the caller's own checks (`egress.GuardedSession` for URLs: allowlist, public
addresses, size; `PayloadStore` for blobs).

Bounds (`CatalogLimits`): documents fetched (the visited set and the queue are bounded by it), items,
depth (the root is 0; its children and items are 1) and time. A link that a bound leaves unvisited is
reported; when documents, items or time run out, the walk stops with one report naming the first link
it did not visit.

Every link that cannot be followed becomes an `UnreachableLink` labelled with the link itself (its query
string removed: a SAS token never reaches a row).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import orjson

from shared.errors import InvalidInputError, RetryableError
from shared.redact import url_without_query

Fetch = Callable[[str], bytes]  # href (URL or `container/path`) -> the document; raises InvalidInputError or RetryableError
BLOB_BASE = "https://blob.invalid/"  # a blob name is resolved as the path of a URL under this origin
CATALOG_TYPES = frozenset({"Catalog", "Collection"})


@dataclass(frozen=True)
class CatalogLimits:
    """How far one walk may go.

    Args:
        max_depth: link levels below the root (an item of the root is at depth 1).
        max_documents: catalogs and collections fetched, the root included.
        max_items: items yielded.
        max_seconds: time the walk may take (checked before each fetch).
        max_document_bytes: size of one document (the fetch should cap it too).
        fetch_workers: item documents fetched at once (the links of one document; at most this many
            documents are held beside the one being walked).
    """

    max_depth: int = 10
    max_documents: int = 10_000
    max_items: int = 1_000_000
    max_seconds: float = 600.0
    max_document_bytes: int = 16 * 1024 * 1024
    fetch_workers: int = 8


@dataclass(frozen=True)
class CatalogItem:
    """An item of the catalog, and the href of its document (what relative asset hrefs are relative to)."""

    href: str
    item: dict[str, Any]


@dataclass(frozen=True)
class UnreachableLink:
    """A link that was not followed: it failed, left the root, was not what its rel says, or a bound hit it.
    `label` is the link as a row may show it (resolved, without its query string)."""

    label: str
    error: str

    @classmethod
    def of(cls, href: str, error: str) -> UnreachableLink:
        return cls(shown(href), error)


@dataclass(frozen=True)
class _Pending:
    href: str
    depth: int


class _Scope:
    """Resolves hrefs, in the root's own terms (URL or blob name), and keeps them inside the root's origin."""

    def __init__(self, root: str) -> None:
        self.blob = not urlsplit(root).scheme
        base = BLOB_BASE + root.lstrip("/") if self.blob else root
        parts = urlsplit(base)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")):
            raise InvalidInputError(f"a catalog root is an https URL or a blob name 'container/path', not {shown(root)}")
        self.root = base
        self._origin = (parts.scheme, parts.netloc.lower())
        self._container = parts.path.split("/")[1] if self.blob else ""
        if self.blob and (not self._container or parts.path.count("/") < 2):
            raise InvalidInputError(f"blob catalog root {shown(root)} must be 'container/path'")
        self._folder = parts.path.rsplit("/", 1)[0] + "/" if self.blob else "/"

    def resolve(self, href: Any, base: str) -> str:
        """The absolute form of `href` (fragment dropped).

        Raises:
            InvalidInputError: not a string, or outside the root's origin or container.
        """
        if not isinstance(href, str) or not href.strip() or any(ord(c) < 0x20 for c in href):
            raise InvalidInputError("the link has no usable href")
        parts = urlsplit(urljoin(base, href.strip()))
        if (parts.scheme, parts.netloc.lower()) != self._origin:
            raise InvalidInputError("the link leaves the catalog's host" if not self.blob else "the link leaves the blob storage")
        if self.blob and parts.path.split("/")[1] != self._container:
            raise InvalidInputError("the link leaves the catalog's container")
        if self.blob and not parts.path.startswith(self._folder):
            raise InvalidInputError("the link leaves the catalog's folder")
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "" if self.blob else parts.query, ""))  # a blob name has no query

    def outward(self, absolute: str) -> str:
        """What the fetch is given: the URL, or the blob name."""
        return absolute[len(BLOB_BASE):] if self.blob and absolute.startswith(BLOB_BASE) else absolute


def walk_catalog(root: str, fetch: Fetch, *, limits: CatalogLimits = CatalogLimits(),
                 clock: Callable[[], float] = time.monotonic) -> Iterator[CatalogItem | UnreachableLink]:
    """Every item under `root`, breadth-first, and every link that could not be followed.

    Raises:
        InvalidInputError: the root itself is not a catalog or collection, or cannot be fetched for good.
        RetryableError: the root cannot be fetched right now (a link below the root that fails for a
            transient reason is reported like any other; the caller may retry the job).
    """
    scope = _Scope(root)
    deadline = clock() + limits.max_seconds
    document = _document(scope, scope.root, fetch, limits)
    if document.get("type") not in CATALOG_TYPES:
        raise InvalidInputError(f"{shown(root)} is not a STAC Catalog or Collection")
    visited = {scope.root}
    queue: deque[_Pending] = deque()
    current = _Pending(scope.root, 0)
    pool = ThreadPoolExecutor(max_workers=limits.fetch_workers, thread_name_prefix="catalog-fetch")
    fetches = _ItemFetches(pool, lambda target: _item(scope, target, fetch, limits), workers=limits.fetch_workers)
    try:
        while True:
            for rel, href in _links(document):
                try:
                    target = scope.resolve(href, current.href)
                except InvalidInputError as error:
                    fetches.report(UnreachableLink.of(_as_given(href, current.href, scope), str(error)))
                    continue
                if current.depth + 1 > limits.max_depth:
                    fetches.report(UnreachableLink.of(scope.outward(target), f"deeper than {limits.max_depth} links below the root"))
                elif rel == "child":
                    if target in visited:
                        continue
                    if len(visited) >= limits.max_documents:
                        fetches.report(UnreachableLink.of(scope.outward(target), f"over the cap of {limits.max_documents} documents"))
                        continue
                    visited.add(target)
                    queue.append(_Pending(target, current.depth + 1))
                else:
                    yield from fetches.make_room(max_items=limits.max_items)
                    stop = (f"the walk stopped at the cap of {limits.max_items} items" if fetches.items >= limits.max_items
                            else f"the walk stopped after {limits.max_seconds:g} s" if clock() > deadline else "")
                    if stop:
                        yield from fetches.drain()
                        yield _stopped(scope.outward(target), stop)
                        return
                    fetches.start(target)
            yield from fetches.drain()
            next_document = None
            while queue and next_document is None:
                current = queue.popleft()
                if clock() > deadline:
                    yield _stopped(scope.outward(current.href), f"the walk stopped after {limits.max_seconds:g} s; "
                                                                f"{len(queue) + 1} documents left unvisited")
                    return
                next_document = _child(scope, current.href, fetch, limits)
                if isinstance(next_document, UnreachableLink):
                    yield next_document
                    next_document = None
            if next_document is None:
                return
            document = next_document
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _ItemFetches:
    """The item documents of one document's links, fetched `workers` at a time and given back in link order
    (with the links reported unfetched in their places), so that the walk's output does not depend on timing."""

    def __init__(self, pool: ThreadPoolExecutor, read_item: Callable[[str], CatalogItem | UnreachableLink], *,
                 workers: int) -> None:
        self._pool = pool
        self._read_item = read_item
        self._workers = workers
        self._window: deque[Future[CatalogItem | UnreachableLink] | UnreachableLink] = deque()
        self._in_flight = 0
        self.items = 0  # items given back so far

    def report(self, link: UnreachableLink) -> None:
        self._window.append(link)

    def start(self, target: str) -> None:
        self._window.append(self._pool.submit(self._read_item, target))
        self._in_flight += 1

    def make_room(self, *, max_items: int) -> Iterator[CatalogItem | UnreachableLink]:
        """Give back what is ready, then wait until one more fetch may start: fewer than `workers` in flight,
        and fewer than `max_items` items even if every fetch in flight brings one (none is fetched for nothing)."""
        while self._window and (not isinstance(self._window[0], Future) or self._window[0].done()):
            yield self._next()
        while self._window and (self._in_flight >= self._workers or self.items + self._in_flight >= max_items):
            yield self._next()

    def drain(self) -> Iterator[CatalogItem | UnreachableLink]:
        while self._window:
            yield self._next()

    def _next(self) -> CatalogItem | UnreachableLink:
        head = self._window.popleft()
        if not isinstance(head, Future):
            return head
        self._in_flight -= 1
        entry = head.result()
        self.items += isinstance(entry, CatalogItem)
        return entry


def _links(document: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    links = document.get("links")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("rel") in ("child", "item"):
            yield link["rel"], link.get("href")


def _document(scope: _Scope, absolute: str, fetch: Fetch, limits: CatalogLimits) -> dict[str, Any]:
    """The JSON object at `absolute`.

    Raises:
        InvalidInputError: too large, not JSON or not an object (or the fetch refused it).
        RetryableError: the fetch failed for now.
    """
    data = fetch(scope.outward(absolute))
    if len(data) > limits.max_document_bytes:
        raise InvalidInputError(f"the document is larger than {limits.max_document_bytes} bytes")
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidInputError("the document is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidInputError("the document is not a JSON object")
    return document


def _child(scope: _Scope, absolute: str, fetch: Fetch, limits: CatalogLimits) -> dict[str, Any] | UnreachableLink:
    try:
        document = _document(scope, absolute, fetch, limits)
    except (InvalidInputError, RetryableError) as error:
        return UnreachableLink.of(scope.outward(absolute), _reason(error))
    if document.get("type") not in CATALOG_TYPES:
        return UnreachableLink.of(scope.outward(absolute), "a child link to something that is not a Catalog or Collection")
    return document


def _item(scope: _Scope, absolute: str, fetch: Fetch, limits: CatalogLimits) -> CatalogItem | UnreachableLink:
    try:
        document = _document(scope, absolute, fetch, limits)
    except (InvalidInputError, RetryableError) as error:
        return UnreachableLink.of(scope.outward(absolute), _reason(error))
    if document.get("type") != "Feature":
        return UnreachableLink.of(scope.outward(absolute), "an item link to something that is not a STAC Item")
    return CatalogItem(scope.outward(absolute), document)


def _stopped(href: str, reason: str) -> UnreachableLink:
    return UnreachableLink.of(href, f"not visited: {reason}")


def _reason(error: Exception) -> str:
    prefix = "unreachable for now: " if isinstance(error, RetryableError) else "unreachable: "
    return prefix + str(error)[:300]


def _as_given(href: Any, base: str, scope: _Scope) -> str:
    """The link as a label: resolved when it can be, else as written (bounded)."""
    if not isinstance(href, str):
        return f"(href {str(href)[:80]!r} in {shown(scope.outward(base))})"
    try:
        return scope.outward(urljoin(base, href.strip())) if href.strip() else "(empty href)"
    except ValueError:
        return href[:300]


def absolute_asset_hrefs(item: dict[str, Any], item_href: str) -> dict[str, Any]:
    """A copy of `item` whose relative asset hrefs are resolved against its document's URL (what a static
    catalog means by them). For a blob-held catalog the caller passes the blob's URL."""
    assets = item.get("assets")
    if not isinstance(assets, dict):
        return item
    resolved = {key: {**asset, "href": urljoin(item_href, asset["href"])}
                if isinstance(asset, dict) and isinstance(asset.get("href"), str) and not urlsplit(asset["href"]).scheme
                else asset for key, asset in assets.items()}
    return {**item, "assets": resolved}


def shown(href: str) -> str:
    """An href as it may appear in a row: no query string (a SAS token), bounded."""
    try:
        return url_without_query(href[:500])
    except ValueError:
        return "(unparsable href)"
