"""The GeoCatalog client and how it reaches the service: auth, pacing, transport. Code outside the package
imports from here."""

from shared.catalog.auth import StaticToken
from shared.catalog.client import (
    COLLECTION_ID,
    GeoCatalogClient,
    Operation,
    OperationRef,
    SearchCursor,
    check_collection_id,
    learnt_seconds,
    operation_end,
    operation_seconds,
)
from shared.catalog.pacing import POLL, WORK, calling_group
from shared.catalog.transport import quiet_sdk_request_logs, sdk_transport_options

__all__ = [
    "COLLECTION_ID",
    "GeoCatalogClient",
    "Operation",
    "OperationRef",
    "POLL",
    "SearchCursor",
    "StaticToken",
    "WORK",
    "calling_group",
    "check_collection_id",
    "learnt_seconds",
    "operation_end",
    "operation_seconds",
    "quiet_sdk_request_logs",
    "sdk_transport_options",
]
