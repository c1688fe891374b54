"""One job per `job_id`: the first message to claim an id plans the job; any other is told apart.

The job row is created with its claimer and a fingerprint of what it asked before any batch exists
(an insert: of two racing messages exactly one wins). The claimer is:
- a job message on the submit queue: its own queue message id. Queue message ids are given by the
  service, so no message can name another's; a `claim` written in a body is refused there;
- an upload: its blob version (`uploads.upload_claim`), so no message owns an upload's job.
Later deliveries are then:
- the claimer's own redelivery (same queue message id), or the app's delayed re-send on its work queue
  (which carries the claim, and is checked against the row): it continues the plan, which is idempotent;
- another message with the same content: a no-op, logged;
- another message with different content: a `Rejected` job of its own, `job-id-conflict-<message id>`,
  naming the job that holds the id. Never a second plan, so never a second POST.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from shared.ids import is_job_id
from shared.store import JobRow, holds

log = logging.getLogger(__name__)

CLAIM_KEY = "claim"  # carried by a job message that the app re-sends itself (planning retries, work queue only)
NOT_CONTENT = ("attempt", "first_attempt", CLAIM_KEY, "kind")  # envelope fields that do not change what is asked


@dataclass(frozen=True)
class JobClaim:
    """Who is planning a job: the queue message that claimed it, and what it asked for."""

    message_id: str
    fingerprint: str

    @classmethod
    def of_delivery(cls, decoded: Any, message_id: str) -> JobClaim:
        """The claim of a job message delivered on the submit queue: its own id and content, nothing it says."""
        return cls(message_id, fingerprint(decoded))

    @classmethod
    def carried(cls, decoded: Any) -> JobClaim | None:
        """The claim an app re-send carries (work queue only), or None when it has none that could be ours."""
        carried = decoded.get(CLAIM_KEY) if isinstance(decoded, dict) else None
        # Its id ends up in a row key (a conflict row), so it must look like one.
        if isinstance(carried, dict) and is_job_id(carried.get("by")) and isinstance(carried.get("fingerprint"), str):
            return cls(carried["by"], carried["fingerprint"][:64])
        return None

    def to_json(self) -> dict[str, str]:
        return {"by": self.message_id, "fingerprint": self.fingerprint}


def fingerprint(decoded: Any) -> str:
    """A hash of what a message asks for (key order and retry bookkeeping do not matter)."""
    content = {k: v for k, v in decoded.items() if k not in NOT_CONTENT} if isinstance(decoded, dict) else decoded
    try:
        text = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # e.g. nested too deep: the repr still tells contents apart
        text = repr(content).encode()
    return hashlib.sha256(text).hexdigest()[:32]


def owns(job: JobRow, claim: JobClaim) -> bool:
    """May this delivery plan the job? Only its claimer."""
    return holds(job, claim.message_id)


def conflict_job_id(claim: JobClaim) -> str:
    return f"job-id-conflict-{claim.message_id}"[:64]


def describe_refusal(job: JobRow, claim: JobClaim) -> str | None:
    """None when the message repeats the job's own content (a no-op), else the conflict's reason."""
    if not job.fingerprint or job.fingerprint == claim.fingerprint:
        log.info("job %s exists (state %s); message ignored", job.job_id, job.state)
        return None
    return (f"job_id {job.job_id!r} is already used by a different message (that job is {job.state}); "
            "send this one with a new job_id")
