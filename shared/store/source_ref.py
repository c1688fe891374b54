"""Where a job's items came from, as the job row keeps it (`JobRow.source_ref`, JSON): what the retry
planner reads back, rather than parsing `JobRow.source`, which is text for people.

A blob is recorded once it has been checked and read (its container allowed, its version known), so a
reference on a row names only what the app itself read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import orjson

MAX_FIELD_CHARS = 2_048  # a blob name is at most 1024 characters; a longer field cannot name one


class SourceKind(StrEnum):
    INLINE = "inline"  # the items (or ids to delete) were in the message: nothing stored to read back
    BLOB = "blob"  # `items_ref.blob`: a blob of this account, whole or a byte range
    URL = "url"  # `items_ref.url`: copied into a blob of the payload container first
    SEARCH = "search"  # a STAC API search (or a delete search)
    UPLOAD = "upload"  # a file dropped in the drop container (one job per blob version)
    CATALOG = "catalog"  # a static STAC catalog: `url` is its root document's URL or blob name (nothing to read back)


@dataclass(frozen=True)
class SourceRef:
    kind: SourceKind
    blob: str = ""  # container/path of the stored items ("" until checked; a URL's stored copy)
    etag: str = ""  # the version of that blob that was read
    start: int | None = None  # with `end`: the byte range of the blob that holds the job's items
    end: int | None = None
    url: str = ""  # the URL or the search, without its query string
    format: str = ""  # "ndjson", "json", "ndjson.gz" or "json.gz" as planned; "" = from the blob's name

    def to_json(self) -> str:
        fields = {k: (v[:MAX_FIELD_CHARS] if isinstance(v, str) else v) for k, v in asdict(self).items() if v not in ("", None)}
        return orjson.dumps(fields).decode()

    @classmethod
    def from_json(cls, text: str) -> SourceRef | None:
        """The reference a row holds; None for a row without one (written before rows kept it) or a malformed one."""
        if not text:
            return None
        try:
            body: Any = orjson.loads(text)
            return cls(kind=SourceKind(body["kind"]), blob=_text(body, "blob"), etag=_text(body, "etag"),
                       start=_offset(body, "start"), end=_offset(body, "end"), url=_text(body, "url"),
                       format=_text(body, "format"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise TypeError(f"{name} is not text")
    return value


def _offset(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} is not a byte offset")
    return value
