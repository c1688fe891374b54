"""Our GeoCatalog client against the emulator, in both API generations (the `api_version` fixture)."""

from __future__ import annotations

import logging

import pytest
import requests

from emulator import EmulatorServer
from shared.catalog.auth import CredentialToken, StaticToken
from shared.catalog.client import GeoCatalogClient, Operation, OperationRef
from shared.errors import AuthenticationError, InvalidInputError, NotFoundError, RejectedByServiceError
from tests.helpers import make_collection, make_item, wait_until


@pytest.fixture
def landcover(client: GeoCatalogClient) -> str:
    ref = client.create_collection(make_collection("landcover"))
    assert ref is not None
    wait_until(lambda: client.get_operation(ref).is_terminal)
    return "landcover"


def finished(client: GeoCatalogClient, ref: OperationRef) -> Operation:
    return wait_until(lambda: (op := client.get_operation(ref)).is_terminal and op)


def test_submit_returns_pollable_operation_on_this_catalog(client: GeoCatalogClient, landcover: str, emulator: EmulatorServer) -> None:
    ref = client.create_items(landcover, {"type": "FeatureCollection", "features": [make_item("a", landcover), make_item("b", landcover)]})
    assert ref.url.startswith(emulator.url) and ref.id in ref.url
    first = client.get_operation(ref)
    assert first.status in ("Pending", "Running")
    assert first.total_items == (None if first.status == "Pending" else 2)  # a Pending operation has no counters yet
    done = finished(client, ref)
    assert done.status == "Succeeded"
    assert (done.total_items, done.succeeded_items, done.failed_items, done.pending_items) == (2, 2, 0, 0)
    assert done.history[-1]["status"] == "Finished"


def test_get_operation_by_id(client: GeoCatalogClient, landcover: str) -> None:
    ref = client.create_items(landcover, make_item("by-id", landcover))
    assert client.get_operation(ref.id).id == ref.id


def test_failed_operation_is_typed_with_code_and_message(client: GeoCatalogClient, landcover: str) -> None:
    finished(client, client.create_items(landcover, make_item("twice", landcover)))
    failed = finished(client, client.create_items(landcover, make_item("twice", landcover)))
    assert failed.status == "Failed"
    assert failed.error_code == "ItemAlreadyExistsInCollection"
    assert "twice" in failed.error_message
    assert failed.failed_items == 1


def test_partial_batch_failure_names_each_failing_item(client: GeoCatalogClient, landcover: str) -> None:
    finished(client, client.create_items(landcover, make_item("old", landcover)))
    batch = {"type": "FeatureCollection", "features": [make_item("new", landcover), make_item("old", landcover), make_item("bad id!", landcover)]}
    failed = finished(client, client.create_items(landcover, batch))
    assert failed.error_code == "ErrorsInBatchOperation"
    assert {(e.item_id, e.code) for e in failed.item_errors} == {("old", "ItemAlreadyExistsInCollection"), ("bad id!", "StacValidationFailed")}
    assert (failed.succeeded_items, failed.failed_items) == (1, 2)


def test_logs_in_each_generation(client: GeoCatalogClient, landcover: str) -> None:
    done = finished(client, client.create_items(landcover, make_item("logged", landcover)))
    logs = client.get_logs(landcover, done)
    assert "logged" in logs if client.layout.legacy else '"Finished"' in logs


def test_list_items_follows_next_links(client: GeoCatalogClient, landcover: str) -> None:
    finished(client, client.create_items(landcover, {"type": "FeatureCollection", "features": [make_item(f"i{n:03d}", landcover) for n in range(23)]}))
    assert [item["id"] for item in client.list_items(landcover, limit=5)] == [f"i{n:03d}" for n in range(23)]


def test_search_ids_pages_through_post_next_links(client: GeoCatalogClient, landcover: str) -> None:
    finished(client, client.create_items(landcover, {"type": "FeatureCollection", "features": [make_item(f"s{n}", landcover) for n in range(5)]}))
    found = {item["id"] for item in client.search_ids(landcover, ["s1", "s3", "missing"])}
    assert found == {"s1", "s3"}


def test_replace_get_and_delete_item(client: GeoCatalogClient, landcover: str) -> None:
    finished(client, client.create_items(landcover, make_item("r1", landcover)))
    changed = make_item("r1", landcover, properties={"datetime": "2024-06-01T00:00:00Z", "title": "v2"})
    assert finished(client, client.replace_item(landcover, changed)).type == "UpdateItem"
    assert client.get_item(landcover, "r1")["properties"]["title"] == "v2"
    deleted = finished(client, client.delete_item(landcover, "r1"))
    assert (deleted.type, deleted.status) == ("DeleteItem", "Succeeded")
    with pytest.raises(NotFoundError):
        client.get_item(landcover, "r1")


def test_deleting_a_missing_item_fails_its_operation(client: GeoCatalogClient, landcover: str) -> None:
    assert finished(client, client.delete_item(landcover, "never-was")).error_code == "NoRecordsToDelete"


def test_unknown_collection_is_not_found_with_azure_error_code(client: GeoCatalogClient) -> None:
    with pytest.raises(NotFoundError) as raised:
        client.create_items("no-such-collection", make_item("x"))
    assert raised.value.code == "ResourceNotFound"


def test_bad_ids_never_reach_a_url(client: GeoCatalogClient, emulator: EmulatorServer) -> None:
    for bad in ("../admin", "a" * 65, "x?y"):
        with pytest.raises(InvalidInputError):
            client.delete_item("landcover", bad)
    with pytest.raises(InvalidInputError):
        client.get_collection("ab")
    assert emulator.app.stats.by_route == {}


def test_operation_urls_outside_the_endpoint_are_refused(client: GeoCatalogClient) -> None:
    with pytest.raises(InvalidInputError):
        client.get_operation(OperationRef("x", "https://attacker.example/inma/operations/x?sig=secret"))


def test_missing_token_is_401_and_pinned_token_mismatch_too(emulator: EmulatorServer) -> None:
    assert requests.get(f"{emulator.url}/stac/collections?api-version=2026-04-15", timeout=5).status_code == 401
    emulator.app.token = "right"
    wrong = GeoCatalogClient(emulator.url, StaticToken("wrong"))
    with pytest.raises(AuthenticationError) as raised:
        wrong.get_collection("landcover")
    assert raised.value.status == 401


def test_sync_rejection_carries_service_code(client: GeoCatalogClient, landcover: str) -> None:
    with pytest.raises(RejectedByServiceError) as raised:
        client.create_items(landcover, {"type": "Nonsense"})
    assert (raised.value.status, raised.value.code) == (400, "InvalidInputData")


def test_errors_and_logs_never_show_the_token_or_query(emulator: EmulatorServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = GeoCatalogClient("http://127.0.0.1:9", StaticToken("s3cr3t-token"), timeout=1)
    with pytest.raises(Exception) as raised:
        client.get_operation(OperationRef("x", "http://127.0.0.1:9/inma/operations/x?api-version=1&sig=SAS"))
    text = str(raised.value) + repr(raised.value) + caplog.text + str(raised.value.__cause__)
    assert "s3cr3t-token" not in text and "sig=SAS" not in text
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


class CountingCredential:
    def __init__(self, lifetime: int) -> None:
        self.calls, self.lifetime = 0, lifetime

    def get_token(self, *scopes: str, **kwargs: object):
        from azure.core.credentials import AccessToken

        self.calls += 1
        self.scopes = scopes
        return AccessToken(f"t{self.calls}", 1_000 + self.lifetime)


def test_credential_tokens_are_cached_and_refreshed_before_expiry() -> None:
    now = [1_000.0]
    credential = CountingCredential(lifetime=3600)
    provider = CredentialToken(credential, clock=lambda: now[0])
    assert provider.token() == provider.token() == "t1"
    assert credential.scopes == ("https://geocatalog.spatio.azure.com/.default",)
    now[0] = 1_000 + 3600 - 299  # inside the refresh margin
    assert provider.token() == "t2"
