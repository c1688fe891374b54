"""The command's exit codes (`watch`, `submit --watch`, and every error of the command's own)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # done; for `watch`: every item of every job succeeded
    ITEMS_FAILED = 1  # `watch`: some item failed or was rejected, or a job ended without succeeding
    OWN_ERROR = 2  # an error of the command's own: usage, no such job, no storage, `--timeout` passed
