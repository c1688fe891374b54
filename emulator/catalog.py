"""The emulated GeoCatalog's state: collections, items and asynchronous operations.

Operations do not run on timers. Each one is given its run and finish times when it is created, and
`settle()` applies every operation that is due before any read, so the state is a pure function of
the clock and the requests: no background task, no race, and a stuck operation costs nothing.
"""

from __future__ import annotations

import heapq
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from emulator.faults import Faults
from emulator.stored_form import is_own_storage, stored_form
from emulator.validation import item_problem, unsigned_asset

TERMINAL = ("Succeeded", "Failed", "Canceled")


@dataclass
class Timings:
    """How long operations take: Pending for `pending_seconds`, then Running for
    `running_seconds` plus `seconds_per_item` for each item."""

    pending_seconds: float = 0.3
    running_seconds: float = 0.5
    seconds_per_item: float = 0.0


@dataclass
class ItemFailure:
    item_id: str
    code: str
    message: str


@dataclass
class Operation:
    """One asynchronous operation (AddItem, UpdateItem, DeleteItem, collection changes)."""

    id: str
    type: str
    collection_id: str
    created: datetime
    run_at: datetime
    finish_at: datetime
    action: str  # add | replace | patch | delete | create-collection | delete-collection
    payload: list[dict[str, Any]]  # items (add/replace/patch) or {"id": ...} stubs (delete); dropped once applied
    item_ids: list[str] = field(default_factory=list)
    outcome: str = "normal"  # normal | fail | stuck
    forced_code: str = ""
    items_to_fail: set[str] = field(default_factory=set)
    canceled_at: datetime | None = None
    applied: bool = False
    failures: list[ItemFailure] = field(default_factory=list)
    succeeded: int = 0
    gets: int = 0  # GETs of this operation served, for benchmarks of poll schedules
    got_at: list[datetime] = field(default_factory=list)  # when each GET was served (the first 64)

    def status(self, now: datetime) -> str:
        if self.canceled_at is not None:
            return "Canceled"
        if now < self.run_at:
            return "Pending"
        if self.outcome == "stuck" or not self.applied:
            return "Running"
        return "Failed" if self.failures else "Succeeded"


def rfc3339(moment: datetime, digits: int = 6) -> str:
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text + ("0" * (digits - 6)) + "Z"


class Catalog:
    """In-memory GeoCatalog state, optionally written through to a SQLite file for inspection."""

    def __init__(
        self,
        *,
        timings: Timings | None = None,
        faults: Faults | None = None,
        atomic_batches: bool = False,
        moving_counters: bool = False,
        sqlite_path: str | None = None,
        sas_token_seconds: float = 3600.0,
    ) -> None:
        self.timings = timings or Timings()
        # False: the counters stay at "all pending" until the end (what we have seen the service do);
        # True: TotalSuccessfulItems grows evenly while Running, for services that report progress.
        self.moving_counters = moving_counters
        self.faults = faults or Faults()
        self.atomic_batches = atomic_batches
        self.collections: dict[str, dict[str, Any]] = {}
        # Stored items are kept serialized: a catalog of a million items stays a few GB of bytes
        # instead of tens of GB of dicts, and the cycle collector has nothing to walk.
        self.items: dict[str, dict[str, bytes]] = {}
        # Each stored item as its requests carried it (a PATCH merged into the previous one), for tests
        # that check what a client sent: the catalog's own copy has its hrefs rewritten (see stored_form).
        self.sent: dict[str, dict[str, bytes]] = {}
        self.operations: dict[str, Operation] = {}
        self.source_items: dict[str, dict[str, bytes]] = {}
        self.sas_tokens: dict[str, datetime] = {}  # signature -> expiry
        self.sas_token_seconds = sas_token_seconds
        self._due: list[tuple[datetime, str]] = []
        self._db = _open_db(sqlite_path) if sqlite_path else None
        if self._db is not None:
            self._load_from_db()

    # ----- clock-driven settling -------------------------------------------------------------

    def settle(self, now: datetime) -> None:
        """Apply every operation whose finish time has passed."""
        while self._due and self._due[0][0] <= now:
            _, op_id = heapq.heappop(self._due)
            op = self.operations[op_id]
            if op.canceled_at is None and op.outcome != "stuck":
                self._apply(op)
                op.applied = True
                op.payload = []
                self._save_operation(op)

    def _apply(self, op: Operation) -> None:
        if op.action == "create-collection":
            return
        if op.action == "delete-collection":
            if op.collection_id not in self.collections:
                message = f"Collection with id '{op.collection_id}' not exists in the geo-catalog"
                op.failures = [ItemFailure(op.collection_id, "ExecutionError", message)]
                return
            self.collections.pop(op.collection_id, None)
            self.items.pop(op.collection_id, None)
            self.sent.pop(op.collection_id, None)
            self._db_exec("DELETE FROM collections WHERE id=?", (op.collection_id,))
            self._db_exec("DELETE FROM items WHERE collection=?", (op.collection_id,))
            return
        if op.outcome == "fail":
            message = f"Operation failed with {op.forced_code} (injected fault)"
            op.failures = [ItemFailure(item_id, op.forced_code, message) for item_id in op.item_ids]
            return
        items = self.items.setdefault(op.collection_id, {})
        sent = self.sent.setdefault(op.collection_id, {})
        staged: dict[str, tuple[bytes, bytes] | None] = {}
        stamp = rfc3339(op.finish_at)
        for entry in op.payload:
            failure = self._check(op, entry, sent, staged)
            if failure is not None:
                op.failures.append(failure)
                continue
            staged[entry["id"]] = None if op.action == "delete" else self._stored_forms(op, entry, sent, stamp)
        if op.failures and self.atomic_batches:
            return  # all or nothing: the good items are not ingested either
        for item_id, forms in staged.items():
            if forms is None:
                items.pop(item_id, None)
                sent.pop(item_id, None)
                self._db_exec("DELETE FROM items WHERE collection=? AND id=?", (op.collection_id, item_id))
            else:
                items[item_id], sent[item_id] = forms
                self._db_exec("INSERT OR REPLACE INTO items VALUES (?,?,?,?)", (op.collection_id, item_id, *forms))
        op.succeeded = len(staged)

    def _check(
        self,
        op: Operation,
        entry: dict[str, Any],
        sent: dict[str, bytes],
        staged: dict[str, tuple[bytes, bytes] | None],
    ) -> ItemFailure | None:
        item_id = _payload_id(entry)
        if op.action != "delete":
            problem = item_problem(entry if op.action != "patch" else _patched(sent, entry), op.collection_id)
            if problem:
                return ItemFailure(item_id, "StacValidationFailed", f"Item validation failed: {problem}")
        exists = item_id in staged or item_id in sent
        if op.action == "add" and exists:
            message = f"Item '{item_id}' already exists in collection '{op.collection_id}'"
            return ItemFailure(item_id, "ItemAlreadyExistsInCollection", message)
        if op.action == "delete" and not exists:
            message = f"No item '{item_id}' in collection '{op.collection_id}' to delete"
            return ItemFailure(item_id, "NoRecordsToDelete", message)
        if op.action == "patch" and not exists:
            return ItemFailure(item_id, "NoRecordsToPatch", f"No item '{item_id}' to patch")
        if item_id in op.items_to_fail:
            code = self.faults.partial_failure_code
            return ItemFailure(item_id, code, f"Ingestion of item '{item_id}' failed (injected fault)")
        if self.faults.require_signed_assets and op.action != "delete":
            return self._asset_access_problem(entry, op.run_at)
        return None

    def _asset_access_problem(self, item: dict[str, Any], at: datetime) -> ItemFailure | None:
        """Why the service could not copy an asset: an href to its own storage, no token on an href,
        or a token of ours that expired."""
        item_id = _payload_id(item)
        for asset in (item.get("assets") or {}).values():
            href = asset.get("href", "") if isinstance(asset, dict) else ""
            if isinstance(href, str) and is_own_storage(href) and not urlsplit(href).query:
                # As recorded when an item read back from the catalog was sent again (REC test_11).
                message = ("Asset transformation exception. Reason: Error retrieving content from public source. "
                           f"Reason: Public access is not permitted on this storage account. Source: {href}")
                return ItemFailure(item_id, "PublicAccessRestricted", message)
        asset_key = unsigned_asset(item)
        if asset_key is not None:
            return _forbidden(item_id, f"asset '{asset_key}' could not be read (no access token on href)")
        for key, asset in (item.get("assets") or {}).items():
            signature = parse_qs(urlsplit(asset.get("href", "")).query).get("sig", [""])[0] if isinstance(asset, dict) else ""
            expiry = self.sas_tokens.get(signature)
            if expiry is not None and expiry < at:
                return _forbidden(item_id, f"asset '{key}' could not be read (access token expired)")
        return None

    # ----- the source side: a public STAC API and a SAS token endpoint (for the quickstart) --------

    def load_source_items(self, document: dict[str, Any]) -> None:
        """Serve these items (a FeatureCollection) from the source STAC API's /search."""
        for item in document.get("features", []):
            self.source_items.setdefault(str(item.get("collection", "")), {})[str(item["id"])] = orjson.dumps(item)

    def issue_sas_token(self, collection_id: str, now: datetime) -> tuple[str, datetime]:
        """A SAS-shaped token for a source collection, valid for `sas_token_seconds`."""
        expiry = now + timedelta(seconds=self.sas_token_seconds)
        signature = secrets.token_hex(16)
        self.sas_tokens[signature] = expiry
        start, end = (t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in (now, expiry))
        return f"st={start}&se={end}&sp=rl&sv=2024-05-04&sr=c&skoid=emulator&sig={signature}", expiry

    def _stored_forms(
        self, op: Operation, entry: dict[str, Any], sent: dict[str, bytes], stamp: str
    ) -> tuple[bytes, bytes]:
        """The item as the catalog keeps (and returns) it, and as its requests carried it."""
        # The payload was parsed from this operation's own request body, so it is ours to keep.
        item = _patched(sent, entry) if op.action == "patch" else entry
        stored = stored_form(item, op.collection_id)
        stored["collection"] = op.collection_id
        stored["_msft:ts"] = stamp
        stored["_msft:etag"] = str(uuid.uuid4())
        return orjson.dumps(stored), orjson.dumps(item)

    def sent_items(self, collection_id: str) -> dict[str, dict[str, Any]]:
        """The collection's items as the requests that stored them carried them (for tests and tools)."""
        return {item_id: orjson.loads(body) for item_id, body in self.sent.get(collection_id, {}).items()}

    # ----- operations -----------------------------------------------------------------------

    def start_operation(
        self,
        *,
        op_type: str,
        action: str,
        collection_id: str,
        payload: list[dict[str, Any]],
        now: datetime,
    ) -> Operation:
        """Create an operation (Pending) whose effect is applied once it finishes."""
        run_at = now + timedelta(seconds=self.timings.pending_seconds)
        duration = self.timings.running_seconds + self.timings.seconds_per_item * len(payload)
        op = Operation(
            id=str(uuid.uuid4()),
            type=op_type,
            collection_id=collection_id,
            created=now,
            run_at=run_at,
            finish_at=run_at + timedelta(seconds=duration),
            action=action,
            payload=payload,
            item_ids=[_payload_id(p) for p in payload],
        )
        if action in ("add", "replace", "patch"):
            op.outcome = self.faults.operation_outcome()
            op.forced_code = self.faults.fail_operations_code
            op.items_to_fail = self.faults.items_to_fail([_payload_id(p) for p in payload])
        self.operations[op.id] = op
        heapq.heappush(self._due, (op.finish_at, op.id))
        self._save_operation(op)
        return op

    def unstick(self, op: Operation, now: datetime) -> None:
        """A stuck operation runs to its normal end now (a service that recovers)."""
        if op.outcome == "stuck" and not op.applied and op.canceled_at is None:
            op.outcome, op.finish_at = "normal", now
            heapq.heappush(self._due, (now, op.id))
            self._save_operation(op)

    def cancel(self, op: Operation, now: datetime) -> None:
        if op.status(now) in ("Pending", "Running"):
            op.canceled_at = now
            self._save_operation(op)

    def operation_json(self, op: Operation, now: datetime, *, legacy: bool = False) -> dict[str, Any]:
        """The Operation resource as the service returns it.

        As recorded: a Pending operation has no counters; an item operation's `startTime` is its
        `creationTime`; collection operations have neither times nor counters; one canceled while
        Pending has only its Canceled entry in the history.
        """
        status = op.status(now)
        collection_op = op.action in ("create-collection", "delete-collection")
        canceled_pending = op.canceled_at is not None and op.canceled_at < op.run_at
        history = [] if canceled_pending else [{"status": "Pending", "timestamp": rfc3339(op.created)}]
        body: dict[str, Any] = {
            "id": op.id,
            "status": status,
            "statusHistory": history,
            "type": op.type,
            "creationTime": rfc3339(op.created),
            "collectionId": op.collection_id,
        }
        if legacy:
            body["operationId"] = op.id
        if status != "Pending" and not canceled_pending:
            history.append({"status": "Running", "timestamp": rfc3339(op.run_at)})
            body["startTime"] = rfc3339(op.created)
        if status in TERMINAL:
            finished = op.canceled_at if op.canceled_at is not None else op.finish_at
            history.append(_last_entry(op, status, rfc3339(finished)))
            body["finishTime"] = rfc3339(finished)
            if status == "Failed":
                body["error"] = {"error": _failure_summary(op)[2]}
        if collection_op:
            body.pop("startTime", None)
            body.pop("finishTime", None)
        elif status != "Pending":
            body["additionalInformation"] = self._counters(op, status, now, canceled_pending)
        return body

    def _counters(self, op: Operation, status: str, now: datetime, canceled_pending: bool) -> dict[str, str]:
        """`additionalInformation`, as strings; a canceled operation keeps what it had (all zero if it never ran)."""
        total = 0 if canceled_pending else len(op.item_ids)
        succeeded = op.succeeded
        pending = total if status in ("Running", "Canceled") else 0
        if status == "Running" and self.moving_counters and op.outcome != "stuck":
            progress = (now - op.run_at) / max(op.finish_at - op.run_at, timedelta(microseconds=1))
            succeeded = min(total, int(total * progress))
            pending = total - succeeded
        return {
            "TotalFailedItems": str(len(op.failures)),
            "TotalItems": str(total),
            "TotalPendingItems": str(pending),
            "TotalSuccessfulItems": str(succeeded),
        }

    def operation_logs(self, op: Operation, now: datetime) -> dict[str, Any]:
        """The preview generation's logs: one line per item once the operation has finished."""
        status = op.status(now)
        lines: list[dict[str, str]] = []
        if status in TERMINAL:
            failed = {f.item_id: f for f in op.failures}
            for item_id in op.item_ids:
                failure = failed.get(item_id)
                if failure is not None:
                    lines.append(
                        {"itemId": item_id, "level": "Error", "code": failure.code, "message": failure.message}
                    )
                elif status == "Succeeded" or not self.atomic_batches:
                    lines.append({"itemId": item_id, "level": "Information", "message": "Item ingested"})
        return {"operationId": op.id, "status": status, "logs": lines}

    # ----- collections ----------------------------------------------------------------------

    def put_collection(self, collection: dict[str, Any], now: datetime | None = None) -> None:
        """Create or replace a collection, stamped `msft:_created` (kept on replace) and `msft:_updated`."""
        collection_id = collection["id"]
        stamp = rfc3339(now or datetime.now(UTC))
        created = self.collections.get(collection_id, {}).get("msft:_created", stamp)
        collection = {**collection, "msft:_created": created, "msft:_updated": stamp}
        self.collections[collection_id] = collection
        self.items.setdefault(collection_id, {})
        self.sent.setdefault(collection_id, {})
        self._db_exec("INSERT OR REPLACE INTO collections VALUES (?,?)", (collection_id, orjson.dumps(collection)))

    # ----- search -------------------------------------------------------------------------

    def search(self, criteria: dict[str, Any], store: dict[str, dict[str, bytes]] | None = None) -> Iterator[bytes]:
        """Stored items (serialized) matching item-search criteria (collections, ids, bbox, datetime)."""
        store = self.items if store is None else store
        collections = criteria.get("collections") or list(store)
        ids = criteria.get("ids")
        bbox = criteria.get("bbox")
        interval = _parse_interval(criteria.get("datetime"))
        for collection_id in collections:
            stored = store.get(collection_id, {})
            candidates = (stored[i] for i in dict.fromkeys(ids) if i in stored) if ids else iter(stored.values())
            for body in candidates:
                if bbox or interval:
                    item = orjson.loads(body)
                    if bbox and not _bbox_intersects(item.get("bbox"), bbox):
                        continue
                    if interval and not _in_interval(item.get("properties") or {}, interval):
                        continue
                yield body

    # ----- SQLite write-through --------------------------------------------------------------

    def _db_exec(self, sql: str, params: tuple[Any, ...]) -> None:
        if self._db is not None:
            self._db.execute(sql, params)
            self._db.commit()

    def _save_operation(self, op: Operation) -> None:
        if self._db is not None:
            summary = self.operation_json(op, op.finish_at if op.applied else op.created)
            self._db_exec("INSERT OR REPLACE INTO operations VALUES (?,?)", (op.id, orjson.dumps(summary)))

    def _load_from_db(self) -> None:
        assert self._db is not None
        for collection_id, body in self._db.execute("SELECT id, body FROM collections"):
            self.collections[collection_id] = orjson.loads(body)
            self.items.setdefault(collection_id, {})
            self.sent.setdefault(collection_id, {})
        for collection_id, item_id, body, sent in self._db.execute("SELECT collection, id, body, sent FROM items"):
            self.items.setdefault(collection_id, {})[item_id] = bytes(body)
            self.sent.setdefault(collection_id, {})[item_id] = bytes(sent if sent is not None else body)


def _open_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("CREATE TABLE IF NOT EXISTS collections (id TEXT PRIMARY KEY, body BLOB)")
    db.execute("CREATE TABLE IF NOT EXISTS items (collection TEXT, id TEXT, body BLOB, sent BLOB, PRIMARY KEY (collection, id))")
    if "sent" not in {row[1] for row in db.execute("PRAGMA table_info(items)")}:  # a file from before `sent` was kept
        db.execute("ALTER TABLE items ADD COLUMN sent BLOB")
    db.execute("CREATE TABLE IF NOT EXISTS operations (id TEXT PRIMARY KEY, body BLOB)")
    db.commit()
    return db


def _forbidden(item_id: str, problem: str) -> ItemFailure:
    return ItemFailure(item_id, "IngestionResourceForbidden", f"Item '{item_id}': {problem}")


def _payload_id(entry: Any) -> str:
    item_id = entry.get("id") if isinstance(entry, dict) else None
    return item_id if isinstance(item_id, str) else "<no id>"


def _patched(items: dict[str, bytes], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 merge patch of an existing item (or of nothing)."""
    base = orjson.loads(items.get(_payload_id(patch), b"{}"))
    return _merge(base, patch)


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _merge(target[key], value)
        else:
            target[key] = value
    return target


def _last_entry(op: Operation, status: str, timestamp: str) -> dict[str, Any]:
    """The history entry of a terminal operation: `Finished` for a success (not the status's name)."""
    if status == "Succeeded":
        return {"status": "Finished", "timestamp": timestamp}
    if status == "Canceled":
        message = f"Operation '{op.id}' for collection '{op.collection_id}' has been cancelled"
        return {"status": "Canceled", "timestamp": timestamp, "errorCode": "CanceledOperation", "errorMessage": message}
    code, message, _ = _failure_summary(op)
    return {"status": "Failed", "timestamp": timestamp, "errorCode": code, "errorMessage": message}


def _failure_summary(op: Operation) -> tuple[str, str, dict[str, Any]]:
    if len(op.failures) == 1 and len(op.item_ids) <= 1:  # one item, or a collection operation
        failure = op.failures[0]
        return failure.code, failure.message, {"code": failure.code, "message": failure.message}
    if op.outcome == "fail":
        message = f"Operation failed with {op.forced_code} (injected fault)"
        return op.forced_code, message, {"code": op.forced_code, "message": message}
    message = f"One or more items in a bulk ingestion operation failed ({len(op.failures)} of {len(op.item_ids)})"
    details = [{"code": f.code, "message": f.message, "target": f.item_id} for f in op.failures]
    return "ErrorsInBatchOperation", message, {"code": "ErrorsInBatchOperation", "message": message, "details": details}


def _bbox_intersects(item_bbox: Any, query: list[float]) -> bool:
    if not isinstance(item_bbox, list) or len(item_bbox) < 4:
        return False
    half = len(item_bbox) // 2
    minx, miny, maxx, maxy = item_bbox[0], item_bbox[1], item_bbox[half], item_bbox[half + 1]
    qminx, qminy, qmaxx, qmaxy = query[0], query[1], query[-2], query[-1]
    return not (maxx < qminx or minx > qmaxx or maxy < qminy or miny > qmaxy)


def _parse_interval(value: Any) -> tuple[datetime | None, datetime | None] | None:
    if not value:
        return None
    parts = str(value).split("/")
    start = _parse_time(parts[0])
    end = _parse_time(parts[1]) if len(parts) > 1 else start
    return start, end


def _parse_time(text: str) -> datetime | None:
    if text in ("", ".."):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _in_interval(properties: dict[str, Any], interval: tuple[datetime | None, datetime | None]) -> bool:
    start_text = properties.get("start_datetime") or properties.get("datetime")
    end_text = properties.get("end_datetime") or properties.get("datetime")
    if not start_text or not end_text:
        return False
    item_start, item_end = _parse_time(start_text), _parse_time(end_text)
    low, high = interval
    if low and item_end and item_end < low:
        return False
    return not (high and item_start and item_start > high)
