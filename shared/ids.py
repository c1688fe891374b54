"""The id rules: which item, collection and job ids the GeoCatalog, Azure Tables and blob paths accept,
and which blob names we read (`blob_path_problem`: the one containment check for `items_ref.blob` and
drop events alike).

A leaf module (it imports nothing of ours but the error type). Every pattern is anchored with
`\\A...\\Z`, so `match` and `fullmatch` both test the whole string: `$` would let a trailing newline
through, which the service and Azure Tables then refuse.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

from shared.errors import InvalidInputError

ITEM_ID = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")  # safe in a URL path segment
COLLECTION_ID = re.compile(r"\A[A-Za-z0-9._-]{3,32}\Z")
JOB_ID = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")  # safe as a table PartitionKey and a blob path segment
BATCH_ID = re.compile(r"\A[A-Za-z0-9._-]{1,128}\Z")  # our batch ids (batch-000001.2, rejected-000001): a safe RowKey

ITEM_ID_RULE = "1-64 characters of [A-Za-z0-9-_.]"
COLLECTION_ID_RULE = "3-32 characters of [A-Za-z0-9-_.]"
JOB_ID_RULE = "1-64 characters of [A-Za-z0-9_-]"
MAX_JOB_ID_CHARS = 64
_NOT_IN_JOB_ID = re.compile(r"[^A-Za-z0-9_-]+")

MAX_BLOB_PATH_CHARS = 1024  # Azure's limit for a blob name
_BAD_PATH_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
BLOB_PATH_RULE = "a plain blob name: no '..', '.', empty segments, backslashes or control characters"


def is_item_id(value: Any) -> bool:
    return isinstance(value, str) and ITEM_ID.match(value) is not None


def is_job_id(value: Any) -> bool:
    return isinstance(value, str) and JOB_ID.match(value) is not None


def check_row_keys(job_id: Any, batch_id: Any = "batch") -> None:
    """Raises InvalidInputError unless a message's job and batch ids could be the keys of a row (every
    row this app writes has such keys: a message naming others is not one of ours)."""
    if not is_job_id(job_id) or not (isinstance(batch_id, str) and BATCH_ID.match(batch_id)):
        raise InvalidInputError(f"job_id {str(job_id)[:80]!r} / batch_id {str(batch_id)[:80]!r} name no row of this app")


def item_id_problem(value: Any) -> str | None:
    """Why `value` is not a valid item id (naming the first bad character, or the length), or None."""
    return _problem(value, ITEM_ID, ITEM_ID_RULE, r"A-Za-z0-9._\-", 1, 64)


def job_id_problem(value: Any) -> str | None:
    return _problem(value, JOB_ID, JOB_ID_RULE, r"A-Za-z0-9_\-", 1, 64)


def check_job_id(job_id: Any) -> str:
    """Raises InvalidInputError unless the id is 1-64 chars of [A-Za-z0-9_-] (a table key and a blob path segment)."""
    problem = job_id_problem(job_id)
    if problem:
        raise InvalidInputError(f"job id {str(job_id)[:80]!r} {problem}")
    return job_id


def new_job_id(stem: str) -> str:
    """`<stem>-<8 random hex>`: readable, unique, and within the job-id rule (`my items.v2` -> `my-items-v2-1a2b3c4d`)."""
    slug = _NOT_IN_JOB_ID.sub("-", stem).strip("-")[:48] or "job"
    return f"{slug}-{secrets.token_hex(4)}"


def suffixed_job_id(job_id: str, suffix: str) -> str:
    """`job_id + suffix`, with the job id shortened and a hash of it kept when the two would pass 64 characters."""
    if len(job_id) + len(suffix) <= MAX_JOB_ID_CHARS:
        return job_id + suffix
    return f"{job_id[: MAX_JOB_ID_CHARS - len(suffix) - 9]}-{hashlib.sha256(job_id.encode()).hexdigest()[:8]}{suffix}"


def check_collection_id(collection_id: Any) -> str:
    """Raises InvalidInputError unless the id is 3-32 chars of [A-Za-z0-9-_.] (safe in a URL path)."""
    problem = _problem(collection_id, COLLECTION_ID, COLLECTION_ID_RULE, r"A-Za-z0-9._\-", 3, 32)
    if problem:
        raise InvalidInputError(f"collection id {str(collection_id)[:40]!r} {problem}")
    return collection_id


def check_item_id(item_id: Any) -> str:
    """Raises InvalidInputError unless the id is 1-64 chars of [A-Za-z0-9-_.] (safe in a URL path)."""
    problem = item_id_problem(item_id)
    if problem:
        raise InvalidInputError(f"item id {str(item_id)[:80]!r} {problem}")
    return item_id


def blob_path_problem(path: str) -> str | None:
    """Why `path` (a blob name inside its container) could reach outside that container, or None.

    The SDK puts the name into the request URL, where `..` and `.` segments are resolved (and some
    clients read `\\` as `/`): `stac-drop/../azure-webjobs-secrets/x` would be a request to another
    container. A caller holding a percent-encoded name checks it before and after unquoting.
    """
    if not path or any(segment in ("", ".", "..") for segment in path.split("/")) or _BAD_PATH_CHARACTERS.search(path):
        return f"is not {BLOB_PATH_RULE}"
    if len(path) > MAX_BLOB_PATH_CHARS:
        return f"is longer than {MAX_BLOB_PATH_CHARS} characters"
    return None


def _problem(value: Any, pattern: re.Pattern[str], rule: str, allowed: str, shortest: int, longest: int) -> str | None:
    if not isinstance(value, str):
        return f"must be a string of {rule}"
    if pattern.match(value):
        return None
    details = []
    bad = re.search(f"[^{allowed}]", value)
    if bad:
        details.append(f"has {bad.group()!r} at position {bad.start() + 1}")
    if not shortest <= len(value) <= longest:
        details.append(f"is {len(value)} characters long")
    return f"must be {rule}: it {' and '.join(details)}"
