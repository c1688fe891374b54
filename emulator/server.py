"""The emulator's HTTP surface: both API generations, the admin endpoint, and an in-process runner.

Routes follow GEOCATALOG_API.md: GA `2026-04-15` / `2025-04-30-preview` under `/stac` and `/inma`,
the quickstart's `2024-01-31-preview` under `/api`. Where the real service is UNKNOWN the choice
made here is written next to the route.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import secrets
import ssl
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from emulator.catalog import Catalog, Operation, Timings
from emulator.faults import Faults
from emulator.validation import COLLECTION_ID, ITEM_ID

API_VERSIONS = ("2024-01-31-preview", "2025-04-30-preview", "2026-04-15")
SUPPORTED_HEADER = ", ".join(API_VERSIONS)
JSON = "application/json; charset=utf-8"
GEOJSON = "application/geo+json"
MAX_LIMIT = 10000  # the SDK documents "Maximum = 10000"; larger limits are clamped, not refused
DEFAULT_LIMIT = 10
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Stats:
    """Requests served, by `METHOD route-name`; the admin endpoint returns and resets them."""

    by_route: dict[str, int] = field(default_factory=dict)
    source_authorization: int = 0  # source-side requests that carried an Authorization header (should stay 0)
    throttled: int = 0  # 429s served (injected or by the rate limit)

    def count(self, key: str) -> None:
        self.by_route[key] = self.by_route.get(key, 0) + 1


class ServiceError(Exception):
    """An Azure-style error response: `{"error": {code, message}}` plus `X-Ms-Error-Code`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self) -> web.Response:
        body = orjson.dumps({"error": {"code": self.code, "message": self.message}})
        headers = {"X-Ms-Error-Code": self.code, "Content-Type": JSON, **self.headers}
        return web.Response(status=self.status, body=body, headers=headers)


def _json(body: Any, status: int = 200, content_type: str = JSON, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), headers={"Content-Type": content_type, **(headers or {})})


def _now() -> datetime:
    return datetime.now(UTC)


class EmulatorApp:
    """Builds the aiohttp application around one `Catalog`."""

    def __init__(self, catalog: Catalog, *, token: str | None = None) -> None:
        self.catalog = catalog
        self.token = token
        self.stats = Stats()

    # ----- plumbing ---------------------------------------------------------------------------

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        r = app.router
        r.add_get("/_emulator/stats", self.admin_stats)
        r.add_post("/_emulator/reset", self.admin_reset)
        r.add_get("/_emulator/faults", self.admin_get_faults)
        r.add_patch("/_emulator/faults", self.admin_patch_faults)
        r.add_patch("/_emulator/timings", self.admin_patch_timings)
        # The source side of the quickstart: a public STAC API and the Planetary Computer SAS API.
        r.add_get("/source/search", self.source_search_get)
        r.add_post("/source/search", self.source_search_post)
        r.add_get("/source/sas/token/{collection}", self.source_sas_token)
        r.add_get("/source/sas/token/{account}/{container}", self.source_sas_token)
        r.add_route("*", "/source/redirect", self.source_redirect)
        r.add_get("/source/items/{name}", self.source_items_document)
        r.add_get("/source/linked", self.source_linked_page)
        for prefix in ("/stac", "/api"):
            r.add_get(prefix, self.landing)
            r.add_get(prefix + "/conformance", self.conformance)
            r.add_get(prefix + "/collections", self.list_collections)
            r.add_post(prefix + "/collections", self.create_collection)
            r.add_get(prefix + "/collections/{cid}", self.get_collection)
            r.add_put(prefix + "/collections/{cid}", self.replace_collection)
            r.add_delete(prefix + "/collections/{cid}", self.delete_collection)
            r.add_post(prefix + "/collections/{cid}/items", self.create_items)
            r.add_get(prefix + "/collections/{cid}/items", self.list_items)
            r.add_get(prefix + "/collections/{cid}/items/{iid}", self.get_item)
            r.add_put(prefix + "/collections/{cid}/items/{iid}", self.replace_item)
            r.add_patch(prefix + "/collections/{cid}/items/{iid}", self.patch_item)
            r.add_delete(prefix + "/collections/{cid}/items/{iid}", self.delete_item)
            r.add_get(prefix + "/search", self.search_get)
            r.add_post(prefix + "/search", self.search_post)
        # Preview generation's operation routes; the legacy Location URL is UNKNOWN, this is our choice.
        r.add_get("/api/collections/{cid}/operations/{opid}", self.get_operation)
        r.add_get("/api/collections/{cid}/operations/{opid}/logs", self.get_logs)
        r.add_get("/inma/operations", self.list_operations)
        r.add_delete("/inma/operations", self.cancel_all_operations)
        r.add_get("/inma/operations/{opid}", self.get_operation)
        r.add_delete("/inma/operations/{opid}", self.cancel_operation)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        if not request.path.startswith("/_emulator/"):
            self.stats.count(f"{request.method} {route.canonical if route else request.path}")
        if request.path.startswith(("/_emulator/", "/source/")):  # no auth, no api-version, no faults
            if request.path.startswith("/source/") and "Authorization" in request.headers:
                self.stats.source_authorization += 1
            return await handler(request)
        faults = self.catalog.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        try:
            self._check_auth(request)
            self._check_api_version(request)
            injected = faults.take_request_fault()
            if faults.operation_reads_status and request.method == "GET" and "/operations/" in request.path:
                injected = faults.operation_reads_status
            if injected in (401, 403):
                raise ServiceError(injected, "InvalidAuthenticationToken", "Access denied (injected fault)")
            if injected == 429:
                raise ServiceError(
                    429, "TooManyRequests", "Rate limit exceeded (injected fault)",
                    {"Retry-After": str(faults.retry_after_seconds)},
                )
            if injected is not None:
                raise ServiceError(
                    injected, "InternalServerError" if injected == 500 else "ServiceUnavailable",
                    "The service is temporarily unavailable (injected fault)",
                    {"Retry-After": str(faults.retry_after_seconds)} if injected == 503 else None,
                )
            self.catalog.settle(_now())
            response = await handler(request)
        except ServiceError as error:
            response = error.response()
            if error.status == 429:
                self.stats.throttled += 1
        response.headers.setdefault("X-Request-ID", uuid.uuid4().hex)
        if request.path.startswith(("/inma", "/api")) or response.status == 202:
            response.headers["api-supported-versions"] = SUPPORTED_HEADER
        return response

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ServiceError(401, "Unauthorized", "A bearer token is required.", {"WWW-Authenticate": "Bearer"})
        if self.token is not None and not secrets.compare_digest(token.strip(), self.token):
            raise ServiceError(401, "InvalidAuthenticationToken", "The access token is invalid.", {"WWW-Authenticate": "Bearer"})

    @staticmethod
    def _check_api_version(request: web.Request) -> None:
        version = request.query.get("api-version")
        if not version:
            raise ServiceError(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        if version not in API_VERSIONS:
            raise ServiceError(400, "UnsupportedApiVersion",
                               f"The api-version '{version}' is not supported; use one of {SUPPORTED_HEADER}.")

    @staticmethod
    def _base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def _collection_id(self, request: web.Request) -> str:
        collection_id = request.match_info["cid"]
        if collection_id not in self.catalog.collections:
            raise ServiceError(404, "ResourceNotFound",
                               f"Collection '{collection_id}' not found. Please verify the collection ID and try again.")
        return collection_id

    @staticmethod
    async def _body(request: web.Request) -> Any:
        try:
            return orjson.loads(await request.read())
        except orjson.JSONDecodeError as error:
            raise ServiceError(400, "InvalidInputData", f"The request body is not valid JSON: {error}") from None

    def _accepted(self, request: web.Request, op: Operation) -> web.Response:
        """202 with the new Operation as body and both Location headers."""
        version = request.query["api-version"]
        legacy = request.path.startswith("/api/")
        path = f"/api/collections/{op.collection_id}/operations/{op.id}" if legacy else f"/inma/operations/{op.id}"
        url = f"{self._base(request)}{path}?api-version={version}"
        body = self.catalog.operation_json(op, op.created, legacy=legacy)
        body["statusHistory"][0]["timestamp"] = body["creationTime"] = body["creationTime"][:-1] + "0Z"
        return _json(body, 202, headers={"Location": url, "operation-location": url})

    # ----- landing and collections ------------------------------------------------------------

    async def landing(self, request: web.Request) -> web.Response:
        base = self._base(request) + request.path
        return _json({"type": "Catalog", "id": "geocatalog-emulator", "stac_version": "1.0.0",
                      "description": "Local GeoCatalog emulator", "conformsTo": CONFORMANCE,
                      "links": [{"rel": "self", "href": base}, {"rel": "search", "href": base + "/search"}]})

    async def conformance(self, request: web.Request) -> web.Response:
        return _json({"conformsTo": CONFORMANCE})

    async def list_collections(self, request: web.Request) -> web.Response:
        collections = [self._collection_with_links(request, c) for c in self.catalog.collections.values()]
        return _json({"collections": collections, "links": []})

    async def create_collection(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        collection_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(collection_id, str) or not COLLECTION_ID.match(collection_id):
            raise ServiceError(400, "InvalidInputData", "Collection id must be 3-32 characters of [A-Za-z0-9-_.].")
        if collection_id in self.catalog.collections:
            raise ServiceError(409, "ResourceExists", f"Collection '{collection_id}' already exists.")
        self.catalog.put_collection(body, _now())
        # The SDK expects 202 + an operation (docs say 201); we serve the SDK's contract, as recorded.
        op = self.catalog.start_operation(op_type="AddCollection", action="create-collection",
                                          collection_id=collection_id, payload=[], now=_now())
        return self._accepted(request, op)

    async def get_collection(self, request: web.Request) -> web.Response:
        return _json(self._collection_with_links(request, self.catalog.collections[self._collection_id(request)]))

    def _collection_with_links(self, request: web.Request, collection: dict[str, Any]) -> dict[str, Any]:
        root = self._root(request)
        url = f"{root}collections/{collection['id']}"
        return {**collection, "links": [
            {"rel": "items", "type": GEOJSON, "href": f"{url}/items"},
            {"rel": "parent", "type": "application/json", "href": root},
            {"rel": "root", "type": "application/json", "href": root},
            {"rel": "self", "type": "application/json", "href": url},
        ]}

    async def replace_collection(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict) or body.get("id") != request.match_info["cid"]:
            raise ServiceError(400, "InvalidInputData", "The body's id must match the collection id in the path.")
        self.catalog.put_collection(body, _now())
        return _json(self._collection_with_links(request, self.catalog.collections[body["id"]]))

    async def delete_collection(self, request: web.Request) -> web.Response:
        # As recorded, deleting a collection that is gone is accepted too; its operation fails (ExecutionError).
        collection_id = request.match_info["cid"]
        op = self.catalog.start_operation(op_type="DeleteCollection", action="delete-collection",
                                          collection_id=collection_id, payload=[], now=_now())
        return self._accepted(request, op)

    # ----- items ------------------------------------------------------------------------------

    async def create_items(self, request: web.Request) -> web.Response:
        collection_id = self._collection_id(request)
        body = await self._body(request)
        if isinstance(body, dict) and body.get("type") == "FeatureCollection" and isinstance(body.get("features"), list):
            items = body["features"]
        elif isinstance(body, dict) and body.get("type") == "Feature":
            items = [body]
        else:
            raise ServiceError(400, "InvalidInputData", "The body must be a STAC Item or a FeatureCollection of Items.")
        op = self.catalog.start_operation(op_type="AddItem", action="add", collection_id=collection_id,
                                          payload=items, now=_now())
        return self._accepted(request, op)

    def _item_id(self, request: web.Request) -> str:
        item_id = request.match_info["iid"]
        if not ITEM_ID.match(item_id):
            raise ServiceError(400, "InvalidInputData", "Item id must be 1-64 characters of [A-Za-z0-9-_.].")
        return item_id

    async def get_item(self, request: web.Request) -> web.Response:
        collection_id = self._collection_id(request)
        item_id = request.match_info["iid"]
        stored = self.catalog.items[collection_id].get(item_id)
        if stored is None:
            raise ServiceError(404, "ResourceNotFound",
                               f"Resource not found at '{request.path}' with parameters {{'collection_id': "
                               f"'{collection_id}', 'item_id': '{item_id}'}}. Check the parameters and try again.")
        return _json(self._with_links(request, orjson.loads(stored)), content_type=GEOJSON)

    async def replace_item(self, request: web.Request) -> web.Response:
        return await self._change_item(request, "replace")

    async def patch_item(self, request: web.Request) -> web.Response:
        return await self._change_item(request, "patch")

    async def _change_item(self, request: web.Request, action: str) -> web.Response:
        collection_id = self._collection_id(request)
        item_id = self._item_id(request)
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ServiceError(400, "InvalidInputData", "The body must be a JSON object.")
        body.setdefault("id", item_id)
        if body["id"] != item_id:
            raise ServiceError(400, "InvalidInputData", "The body's id must match the item id in the path.")
        op = self.catalog.start_operation(op_type="UpdateItem", action=action, collection_id=collection_id,
                                          payload=[body], now=_now())
        return self._accepted(request, op)

    async def delete_item(self, request: web.Request) -> web.Response:
        collection_id = self._collection_id(request)
        item_id = self._item_id(request)
        op = self.catalog.start_operation(op_type="DeleteItem", action="delete", collection_id=collection_id,
                                          payload=[{"id": item_id}], now=_now())
        return self._accepted(request, op)

    def _root(self, request: web.Request) -> str:
        """The STAC root URL, with its trailing slash as the service writes it."""
        return self._base(request) + ("/api/" if request.path.startswith("/api/") else "/stac/")

    def _with_links(self, request: web.Request, item: dict[str, Any]) -> dict[str, Any]:
        collection_url = f"{self._root(request)}collections/{item['collection']}"
        return {**item, "links": [
            *_collection_links(collection_url),
            {"rel": "root", "type": "application/json", "href": self._root(request)},
            {"rel": "self", "type": GEOJSON, "href": f"{collection_url}/items/{item['id']}"},
        ]}

    async def list_items(self, request: web.Request) -> web.Response:
        collection_id = self._collection_id(request)
        criteria = _criteria_from_query(request)
        criteria["collections"] = [collection_id]
        return self._page(request, criteria, method="GET", collection_id=collection_id)

    # ----- search -----------------------------------------------------------------------------

    async def search_get(self, request: web.Request) -> web.Response:
        return self._page(request, _criteria_from_query(request), method="GET")

    async def search_post(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ServiceError(400, "InvalidInputData", "The search body must be a JSON object.")
        if isinstance(body.get("bbox"), str):
            body["bbox"] = [float(v) for v in body["bbox"].split(",")]
        return self._page(request, body, method="POST")

    def _page(self, request: web.Request, criteria: dict[str, Any], *, method: str, source: bool = False,
              collection_id: str = "") -> web.Response:
        """One page of an item search or listing, with an opaque-token `next` link.

        As recorded, a page holds `type`, `features` and `links` only: `next`, `root`, `self`, and for
        a collection's items `collection` and `parent` too. `source=True` searches the source side's
        items (the public STAC API of the quickstart), whose POST `next` links ask the client to merge
        the token into its own body, and which counts what it returns.
        """
        limit = min(int(criteria.get("limit") or DEFAULT_LIMIT), MAX_LIMIT)
        offset = _token_to_offset(criteria.get("token"))
        matches = list(self.catalog.search(criteria, self.catalog.source_items if source else None))
        bodies = (orjson.loads(body) for body in matches[offset:offset + limit])
        page = list(bodies) if source else [self._with_links(request, item) for item in bodies]
        links: list[dict[str, Any]] = []
        if offset + limit < len(matches):
            token = _offset_to_token(offset + limit)
            if method == "GET":
                query = {**{k: v for k, v in request.query.items() if k != "token"}, "token": token}
                links.append({"rel": "next", "type": GEOJSON, "method": "GET",
                              "href": f"{self._base(request)}{request.path}?{urlencode(query)}"})
            else:
                version = request.query.get("api-version")
                href = f"{self._base(request)}{request.path}" + (f"?api-version={version}" if version else "")
                if source:
                    links.append({"rel": "next", "type": GEOJSON, "method": "POST", "href": href,
                                  "body": {"token": token}, "merge": True})
                else:
                    links.append({"rel": "next", "type": GEOJSON, "method": "POST", "href": href,
                                  "body": {**criteria, "token": token}})
        if source:
            return _json({"type": "FeatureCollection", "features": page, "links": links, "numberReturned": len(page)},
                         content_type=GEOJSON)
        own = [{"rel": "root", "type": "application/json", "href": self._root(request)},
               {"rel": "self", "type": GEOJSON, "href": str(request.url)}]
        if collection_id:
            links = [*_collection_links(f"{self._root(request)}collections/{collection_id}"), *own, *links]
        else:
            links += own
        return _json({"type": "FeatureCollection", "features": page, "links": links}, content_type=GEOJSON)

    # ----- operations ---------------------------------------------------------------------------

    def _operation(self, request: web.Request) -> Operation:
        op = self.catalog.operations.get(request.match_info["opid"])
        if op is None:
            raise ServiceError(404, "ResourceNotFound", f"Operation '{request.match_info['opid']}' not found.")
        return op

    async def get_operation(self, request: web.Request) -> web.Response:
        legacy = request.path.startswith("/api/")
        op = self._operation(request)
        op.gets += 1
        if len(op.got_at) < 64:
            op.got_at.append(_now())
        return _json(self.catalog.operation_json(op, _now(), legacy=legacy))

    async def get_logs(self, request: web.Request) -> web.Response:
        return _json(self.catalog.operation_logs(self._operation(request), _now()))

    async def list_operations(self, request: web.Request) -> web.Response:
        now = _now()
        top = min(int(request.query.get("$top", "100")), 1000)
        skip = int(request.query.get("$skip", "0"))
        wanted_collection = request.query.get("collectionId")
        wanted_status = request.query.get("status")
        ops = [self.catalog.operation_json(op, now) for op in self.catalog.operations.values()
               if not wanted_collection or op.collection_id == wanted_collection]
        if wanted_status:
            ops = [op for op in ops if op["status"] == wanted_status]
        body: dict[str, Any] = {"value": ops[skip:skip + top]}
        if skip + top < len(ops):
            query = {**request.query, "$skip": str(skip + top), "$top": str(top)}
            body["nextLink"] = f"{self._base(request)}{request.path}?{urlencode(query)}"
        return _json(body)

    async def cancel_operation(self, request: web.Request) -> web.Response:
        self.catalog.cancel(self._operation(request), _now())
        return web.Response(status=204)

    async def cancel_all_operations(self, request: web.Request) -> web.Response:
        now = _now()
        for op in self.catalog.operations.values():
            self.catalog.cancel(op, now)
        return web.Response(status=204)

    # ----- source side -------------------------------------------------------------------------

    async def source_search_get(self, request: web.Request) -> web.Response:
        return self._page(request, _criteria_from_query(request), method="GET", source=True)

    async def source_search_post(self, request: web.Request) -> web.Response:
        try:
            criteria = await request.json()
        except ValueError:
            return _json({"code": "BadRequest", "description": "body is not JSON"}, 400)
        return self._page(request, criteria if isinstance(criteria, dict) else {}, method="POST", source=True)

    async def source_sas_token(self, request: web.Request) -> web.Response:
        info = request.match_info
        token, expiry = self.catalog.issue_sas_token(info.get("collection") or f"{info['account']}/{info['container']}", _now())
        return _json({"msft:expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"), "token": token})

    async def source_redirect(self, request: web.Request) -> web.Response:
        """`?to=URL&status=302`: a redirect to anywhere (what an allowlisted host could answer)."""
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": request.query.get("to", "/")})

    async def source_linked_page(self, request: web.Request) -> web.Response:
        """`?next=URL`: one page of a search, whose `next` link is whatever the caller asked for."""
        items = [orjson.loads(body) for store in self.catalog.source_items.values() for body in store.values()][:1]
        links = [{"rel": "next", "method": "GET", "href": request.query["next"]}] if request.query.get("next") else []
        return _json({"type": "FeatureCollection", "features": items, "links": links}, content_type=GEOJSON)

    async def source_items_document(self, request: web.Request) -> web.Response:
        """The source items as one document: `items.json` (FeatureCollection) or `items.ndjson`, each also `.gz`."""
        name = request.match_info["name"]
        items = [orjson.loads(body) for store in self.catalog.source_items.values() for body in store.values()]
        base = name.removesuffix(".gz")
        if base == "items.ndjson":
            data = b"".join(orjson.dumps(item) + b"\n" for item in items)
        elif base == "items.json":
            data = orjson.dumps({"type": "FeatureCollection", "features": items})
        else:
            return _json({"code": "NotFound", "description": f"no document {name}"}, 404)
        if name.endswith(".gz"):
            data = gzip.compress(data)
        return web.Response(body=data, content_type="application/gzip" if name.endswith(".gz") else "application/json")

    # ----- admin --------------------------------------------------------------------------------

    async def admin_stats(self, request: web.Request) -> web.Response:
        items = sum(len(v) for v in self.catalog.items.values())
        return _json({"requests": self.stats.by_route, "throttled": self.stats.throttled, "items": items,
                      "operations": len(self.catalog.operations),
                      "source_authorization": self.stats.source_authorization})

    async def admin_reset(self, request: web.Request) -> web.Response:
        self.catalog.collections.clear()
        self.catalog.items.clear()
        self.catalog.operations.clear()
        self.catalog._due.clear()  # noqa: SLF001 - the admin endpoint owns the catalog's lifecycle
        self.catalog.faults.update(Faults().to_dict())
        self.stats.by_route.clear()
        self.stats.source_authorization = 0
        self.stats.throttled = 0
        return web.Response(status=204)

    async def admin_get_faults(self, request: web.Request) -> web.Response:
        return _json(self.catalog.faults.to_dict())

    async def admin_patch_faults(self, request: web.Request) -> web.Response:
        try:
            self.catalog.faults.update(await request.json())
        except KeyError as error:
            return _json({"error": f"unknown fault {error}"}, 400)
        return _json(self.catalog.faults.to_dict())

    async def admin_patch_timings(self, request: web.Request) -> web.Response:
        for key, value in (await request.json()).items():
            setattr(self.catalog.timings, key, float(value))
        return _json(vars(self.catalog.timings))


CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]


def _collection_links(collection_url: str) -> list[dict[str, str]]:
    return [{"rel": "collection", "type": "application/json", "href": collection_url},
            {"rel": "parent", "type": "application/json", "href": collection_url}]


def _criteria_from_query(request: web.Request) -> dict[str, Any]:
    query = request.query
    criteria: dict[str, Any] = {"limit": query.get("limit"), "token": query.get("token"),
                                "datetime": query.get("datetime")}
    if query.get("bbox"):
        criteria["bbox"] = [float(v) for v in query["bbox"].split(",")]
    if query.get("ids"):
        criteria["ids"] = query["ids"].split(",")
    collections = query.get("collections") or query.get("collection")
    if collections:
        criteria["collections"] = collections.split(",")
    return criteria


def _offset_to_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _token_to_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        return int(text.removeprefix("o:"))
    except ValueError:
        raise ServiceError(400, "InvalidInputData", "The paging token is not valid.") from None


# ----- running it --------------------------------------------------------------------------------


@dataclass
class EmulatorOptions:
    """Everything `python -m emulator` can set."""

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    timings: Timings = field(default_factory=Timings)
    faults: Faults = field(default_factory=Faults)
    atomic_batches: bool = False
    moving_counters: bool = False  # the operation's counters move while it runs (see Catalog)
    sqlite_path: str | None = None
    tls_cert: str | None = None  # PEM with certificate and key; serve https when set
    source_items: str | None = None  # a FeatureCollection file served by the source STAC API (/source/search)
    sas_token_seconds: float = 3600.0


class EmulatorServer:
    """Runs the emulator on its own event-loop thread, for tests and the local stack.

    Use as a context manager; `url` is the base URL (`http(s)://127.0.0.1:PORT`) once started.
    """

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = options or EmulatorOptions()
        self.catalog = Catalog(timings=self.options.timings, faults=self.options.faults,
                               atomic_batches=self.options.atomic_batches,
                               moving_counters=self.options.moving_counters, sqlite_path=self.options.sqlite_path,
                               sas_token_seconds=self.options.sas_token_seconds)
        if self.options.source_items:
            self.catalog.load_source_items(orjson.loads(Path(self.options.source_items).read_bytes()))
        self.app = EmulatorApp(self.catalog, token=self.options.token)
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="geocatalog-emulator", daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> EmulatorServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app.build(), access_log=None)
        await self._runner.setup()
        ssl_context = _ssl_context(self.options.tls_cert) if self.options.tls_cert else None
        site = web.TCPSite(self._runner, self.options.host, self.options.port, ssl_context=ssl_context,
                           backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
        self.url = f"{'https' if ssl_context else 'http'}://{self.options.host}:{port}"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def call(self, function: Callable[[], Any]) -> Any:
        """Run `function` on the emulator's loop (state is owned by that thread) and return its result."""

        async def run() -> Any:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ssl_context(pem_path: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pem_path)
    return context
