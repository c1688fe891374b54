"""bench/cost.py names each storage request by the operation Azure bills, and prices it by its class."""

from __future__ import annotations

import pytest

from bench.cost import kind_of, rate_of

ACCOUNT = "http://127.0.0.1:10001/devstoreaccount1"


@pytest.mark.parametrize(("service", "method", "url", "kind"), [
    ("queue", "POST", f"{ACCOUNT}/stac-poll/messages?visibilitytimeout=5", "PutMessage"),
    ("queue", "GET", f"{ACCOUNT}/stac-poll/messages?numofmessages=8&visibilitytimeout=600", "GetMessages"),
    ("queue", "GET", f"{ACCOUNT}/stac-poll/messages?peekonly=true", "PeekMessages"),
    ("queue", "DELETE", f"{ACCOUNT}/stac-poll/messages/abc?popreceipt=x", "DeleteMessage"),
    ("queue", "PUT", f"{ACCOUNT}/stac-poll/messages/abc?popreceipt=x&visibilitytimeout=30", "UpdateMessage"),
    ("queue", "GET", f"{ACCOUNT}/stac-poll?comp=metadata", "GetQueueMetadata"),
    ("queue", "PUT", f"{ACCOUNT}/stac-poll", "CreateQueue"),
    ("table", "POST", f"{ACCOUNT}/$batch", "EntityGroupTransaction"),
    ("table", "GET", f"{ACCOUNT}/Status(PartitionKey='j',RowKey='job')", "GetEntity"),
    ("table", "GET", f"{ACCOUNT}/Status()?$filter=PartitionKey%20eq%20'j'", "QueryEntities"),
    ("table", "PUT", f"{ACCOUNT}/Status(PartitionKey='j',RowKey='b1')", "UpdateEntity"),
    ("table", "PATCH", f"{ACCOUNT}/Status(PartitionKey='j',RowKey='b1')", "MergeEntity"),
    ("table", "POST", f"{ACCOUNT}/Status", "InsertEntity"),
    ("table", "POST", f"{ACCOUNT}/Tables", "CreateTable"),
    ("blob", "PUT", f"{ACCOUNT}/stac-payloads/batches/b1.json", "PutBlob"),
    ("blob", "PUT", f"{ACCOUNT}/stac-payloads/big.json?comp=block&blockid=AA", "PutBlock"),
    ("blob", "PUT", f"{ACCOUNT}/stac-payloads/big.json?comp=blocklist", "PutBlockList"),
    ("blob", "GET", f"{ACCOUNT}/stac-drop/c/items.ndjson", "GetBlob"),
    ("blob", "HEAD", f"{ACCOUNT}/stac-drop/c/items.ndjson", "GetBlobProperties"),
    ("blob", "GET", f"{ACCOUNT}/stac-drop?restype=container&comp=list", "ListBlobs"),
    ("blob", "DELETE", f"{ACCOUNT}/stac-payloads/batches/b1.json", "DeleteBlob"),
])
def test_requests_are_named_by_the_billed_operation(service, method, url, kind) -> None:
    assert kind_of(service, method, url) == kind


def test_prices_follow_the_operation_class() -> None:
    assert rate_of("blob", "PutBlob") > rate_of("blob", "GetBlob") > rate_of("blob", "DeleteBlob") == 0
    assert rate_of("blob", "ListBlobs") == rate_of("blob", "PutBlob")  # listing is billed as a write on Hot
    assert rate_of("table", "EntityGroupTransaction") == rate_of("table", "GetEntity")
