"""Each fault mode, switched on mid-run through the admin endpoint, changes what a client sees."""

from __future__ import annotations

import time

import pytest
import requests

from emulator import EmulatorOptions, EmulatorServer, Faults, Timings
from shared.catalog.auth import StaticToken
from shared.catalog.client import GeoCatalogClient, Operation, OperationRef
from shared.errors import AuthenticationError, RetryableError
from tests.helpers import make_collection, make_item, wait_until


@pytest.fixture
def gc(emulator: EmulatorServer) -> GeoCatalogClient:
    client = GeoCatalogClient(emulator.url, StaticToken("dev"), timeout=5)
    ref = client.create_collection(make_collection("landcover"))
    assert ref is not None
    return client


def set_faults(emulator: EmulatorServer, **changes: object) -> None:
    response = requests.patch(f"{emulator.url}/_emulator/faults", json=changes, timeout=5)
    response.raise_for_status()


def finished(client: GeoCatalogClient, ref: OperationRef, timeout: float = 10) -> Operation:
    return wait_until(lambda: (op := client.get_operation(ref)).is_terminal and op, timeout=timeout)


def test_rate_limit_next_requests_get_429_with_retry_after(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    set_faults(emulator, rate_limit_next=2, retry_after_seconds=7)
    for _ in range(2):
        with pytest.raises(RetryableError) as raised:
            gc.get_collection("landcover")
        assert (raised.value.status, raised.value.retry_after) == (429, 7)
    assert gc.get_collection("landcover")["id"] == "landcover"


def test_rate_limit_fraction(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    set_faults(emulator, rate_limit_fraction=0.5, seed=1)
    outcomes = []
    for _ in range(40):
        try:
            gc.get_collection("landcover")
            outcomes.append("ok")
        except RetryableError as error:
            outcomes.append(error.status)
    assert 5 < outcomes.count(429) < 35 and "ok" in outcomes


def test_server_errors_next_and_fraction(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    set_faults(emulator, server_error_next=1)
    with pytest.raises(RetryableError) as raised:
        gc.get_collection("landcover")
    assert raised.value.status == 503
    set_faults(emulator, server_error_fraction=1.0)
    with pytest.raises(RetryableError) as raised:
        gc.get_collection("landcover")
    assert raised.value.status in (500, 503)


def test_latency_is_added_and_a_short_timeout_sees_it_as_retryable(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    set_faults(emulator, latency_ms=1500)
    impatient = GeoCatalogClient(emulator.url, StaticToken("dev"), timeout=0.3)
    with pytest.raises(RetryableError, match="timed out"):
        impatient.get_collection("landcover")


def test_operations_fail_with_the_given_code(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    set_faults(emulator, fail_operations_code="InternalIntermitentError")
    op = finished(gc, gc.create_items("landcover", make_item("f1", "landcover")))
    assert (op.status, op.error_code) == ("Failed", "InternalIntermitentError")
    set_faults(emulator, fail_operations_code="")
    assert finished(gc, gc.create_items("landcover", make_item("f1", "landcover"))).status == "Succeeded"


def test_stuck_operations_never_finish(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    set_faults(emulator, stuck_operations_fraction=1.0)
    ref = gc.create_items("landcover", make_item("s1", "landcover"))
    time.sleep(0.5)  # ten times the emulator's configured operation duration
    assert gc.get_operation(ref).status == "Running"


def test_a_stuck_operation_canceled_by_our_client_ends_canceled_and_lands_nothing(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    set_faults(emulator, stuck_operations_fraction=1.0)
    ref = gc.create_items("landcover", make_item("c1", "landcover"))
    gc.cancel_operation(ref.id)
    assert gc.get_operation(ref).status == "Canceled"
    gc.cancel_operation(ref.id)  # again: an ended operation keeps its end
    assert gc.get_operation(ref).status == "Canceled" and "c1" not in {item["id"] for item in gc.list_items("landcover")}


def test_partial_failures_fail_some_items_and_counters_say_so(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    set_faults(emulator, partial_failure_fraction=0.3, partial_failure_code="AssetTransformationError")
    features = [make_item(f"p{i}", "landcover") for i in range(10)]
    op = finished(gc, gc.create_items("landcover", {"type": "FeatureCollection", "features": features}))
    assert (op.status, op.failed_items, op.succeeded_items) == ("Failed", 3, 7)
    assert {e.code for e in op.item_errors} == {"AssetTransformationError"}
    stored = {item["id"] for item in gc.list_items("landcover")}
    assert stored == {f"p{i}" for i in range(10)} - {e.item_id for e in op.item_errors}


def test_atomic_batches_ingest_nothing_when_one_item_fails() -> None:
    with EmulatorServer(EmulatorOptions(timings=Timings(0.02, 0.02), atomic_batches=True)) as server:
        client = GeoCatalogClient(server.url, StaticToken("dev"))
        client.create_collection(make_collection("landcover"))
        batch = {"type": "FeatureCollection", "features": [make_item("good", "landcover"), make_item("bad", "other")]}
        op = finished(client, client.create_items("landcover", batch))
        assert (op.status, op.succeeded_items, op.failed_items) == ("Failed", 0, 1)
        assert list(client.list_items("landcover")) == []


def test_require_signed_assets_refuses_unsigned_hrefs(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    set_faults(emulator, require_signed_assets=True)
    unsigned = finished(gc, gc.create_items("landcover", make_item("u1", "landcover")))
    assert unsigned.error_code == "IngestionResourceForbidden"
    signed = make_item("u2", "landcover")
    signed["assets"]["data"]["href"] += "?sv=2024&sig=abc"
    assert finished(gc, gc.create_items("landcover", signed)).status == "Succeeded"


def test_pinned_token_from_options() -> None:
    with EmulatorServer(EmulatorOptions(token="only-this")) as server:
        with pytest.raises(AuthenticationError):
            GeoCatalogClient(server.url, StaticToken("other")).get_collection("abc")


def test_faults_from_constructor_options() -> None:
    with EmulatorServer(EmulatorOptions(faults=Faults(rate_limit_next=1))) as server:
        with pytest.raises(RetryableError):
            GeoCatalogClient(server.url, StaticToken("dev")).get_collection("abc")


def test_unknown_fault_names_are_refused(emulator: EmulatorServer) -> None:
    assert requests.patch(f"{emulator.url}/_emulator/faults", json={"nope": 1}, timeout=5).status_code == 400


def test_reset_clears_state_and_faults(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    set_faults(emulator, rate_limit_fraction=1.0)
    requests.post(f"{emulator.url}/_emulator/reset", timeout=5).raise_for_status()
    assert requests.get(f"{emulator.url}/_emulator/faults", timeout=5).json()["rate_limit_fraction"] == 0
    assert gc.create_collection(make_collection("landcover")) is not None  # gone, so creatable again


def test_cancel_operation_and_cancel_all(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    set_faults(emulator, stuck_operations_fraction=1.0)
    one = gc.create_items("landcover", make_item("c1", "landcover"))
    two = gc.create_items("landcover", make_item("c2", "landcover"))
    headers = {"Authorization": "Bearer dev"}
    assert requests.delete(one.url, headers=headers, timeout=5).status_code == 204
    assert gc.get_operation(one).status == "Canceled"
    assert gc.get_operation(two).status in ("Pending", "Running")
    assert requests.delete(f"{emulator.url}/inma/operations?api-version=2026-04-15", headers=headers, timeout=5).status_code == 204
    assert gc.get_operation(two).status == "Canceled"


def test_sqlite_file_keeps_state_across_restarts(tmp_path) -> None:
    path = str(tmp_path / "catalog.sqlite")
    with EmulatorServer(EmulatorOptions(timings=Timings(0, 0), sqlite_path=path)) as server:
        client = GeoCatalogClient(server.url, StaticToken("dev"))
        client.create_collection(make_collection("landcover"))
        finished(client, client.create_items("landcover", make_item("kept", "landcover")))
    with EmulatorServer(EmulatorOptions(sqlite_path=path)) as server:
        client = GeoCatalogClient(server.url, StaticToken("dev"))
        assert client.get_item("landcover", "kept")["id"] == "kept"


def test_search_by_bbox_datetime_and_collections_get_and_post(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    west = make_item("west", "landcover", bbox=[-10, 0, -5, 5], properties={"datetime": "2020-06-01T00:00:00Z"})
    east = make_item("east", "landcover", bbox=[5, 0, 10, 5], properties={"datetime": "2023-06-01T00:00:00Z"})
    finished(gc, gc.create_items("landcover", {"type": "FeatureCollection", "features": [west, east]}))
    headers = {"Authorization": "Bearer dev"}
    url = f"{emulator.url}/stac/search?api-version=2026-04-15"

    def ids(response: requests.Response) -> set[str]:
        return {f["id"] for f in response.json()["features"]}

    assert ids(requests.get(url, params={"bbox": "0,0,20,20"}, headers=headers, timeout=5)) == {"east"}
    assert ids(requests.post(url, json={"datetime": "2019-01-01T00:00:00Z/2021-01-01T00:00:00Z"}, headers=headers, timeout=5)) == {"west"}
    assert ids(requests.post(url, json={"collections": ["other"]}, headers=headers, timeout=5)) == set()
    assert ids(requests.post(url, json={"datetime": "2022-01-01T00:00:00Z/.."}, headers=headers, timeout=5)) == {"east"}


def test_collection_replace_and_delete(gc: GeoCatalogClient, emulator: EmulatorServer) -> None:
    headers = {"Authorization": "Bearer dev"}
    url = f"{emulator.url}/stac/collections/landcover?api-version=2026-04-15"
    changed = {**make_collection("landcover"), "title": "renamed"}
    assert requests.put(url, json=changed, headers=headers, timeout=5).status_code == 200
    assert gc.get_collection("landcover")["title"] == "renamed"
    deleted = requests.delete(url, headers=headers, timeout=5)
    assert deleted.status_code == 202
    wait_until(lambda: requests.get(url, headers=headers, timeout=5).status_code == 404)
