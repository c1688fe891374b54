"""Long text on a row: where it goes when it does not fit, and how much of an error message is kept.

Spill: a table property holds 32K UTF-16 characters, so a text field longer than MAX_INLINE_CHARS is
written to a payload blob, `<job id>/<batch id><suffix>`, and the row holds `container/path` in its
`<field>_blob` field: empty `<field>` (id lists, failed and rejected items) or, for logs, their head.
Every reader goes through `read_spilled` (the blob when there is one, else the inline text), so a
spilled list reads back as if it were inline.

Brief: an error message a step composes (a service's answer, an exception's text) is cut to
ERROR_MESSAGE_CHARS before it goes on a row; the table write redacts and caps it again
(`status.TEXT_LIMITS`), whoever composed it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from shared.store.payloads import PayloadStore

MAX_INLINE_CHARS = 30_000  # under the 32K-character property limit
ERROR_MESSAGE_CHARS = 2_000
# The blob each spilled field goes to, after `<job id>/<batch id>`.
SPILL_SUFFIXES = {
    "item_ids": ".ids.json",
    "failed_items": ".failed.json",
    "rejected_items": ".json.rejected.json",
    "logs": ".logs.txt",
    "sync_items": ".sync.json",
}


@dataclass(frozen=True)
class Spilled:
    """One text field as a row stores it: inline, or in a blob that `blob` names."""

    field: str
    text: str
    blob: str = ""

    def columns(self) -> dict[str, str]:
        """The row's fields this sets: `{field: text, field_blob: blob}`."""
        return {self.field: self.text, f"{self.field}_blob": self.blob}


def spill_text(payloads: PayloadStore, job_id: str, batch_id: str, field: str, text: str, *,
          limit: int = MAX_INLINE_CHARS, keep_head: bool = False) -> Spilled:
    """`text` for the row's `field`: inline when it is at most `limit` characters, else written to its blob
    (the row keeps its first `limit` characters when `keep_head`, else nothing)."""
    if len(text) <= limit:
        return Spilled(field, text)
    blob = payloads.put(f"{job_id}/{batch_id}{SPILL_SUFFIXES[field]}", text.encode())
    return Spilled(field, text[:limit] if keep_head else "", blob)


def spill_json(payloads: PayloadStore, job_id: str, batch_id: str, field: str, value: Any) -> Spilled:
    """`spill` of `value` as JSON."""
    return spill_text(payloads, job_id, batch_id, field, orjson.dumps(value).decode())


def read_spilled(row: Any, field: str, read: Callable[[str], bytes]) -> str:
    """The whole text of a row's `field`: from its blob when it spilled, else as the row holds it."""
    blob = getattr(row, f"{field}_blob")
    return read(blob).decode() if blob else getattr(row, field)


def read_spilled_json(row: Any, field: str, read: Callable[[str], bytes], empty: Any) -> Any:
    """`read_spilled` parsed as JSON; `empty` when the field holds nothing at all."""
    text = read_spilled(row, field, read)
    return orjson.loads(text) if text else empty


def brief(message: str) -> str:
    """An error message as a step may put it on a row: its first ERROR_MESSAGE_CHARS characters."""
    return message[:ERROR_MESSAGE_CHARS]
