"""The emulator answers as the real service was recorded answering (GEOCATALOG_API.md, last section:
the official SDK's recorded live tests, api-version 2025-04-30-preview)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulator import EmulatorOptions, EmulatorServer, Faults, Timings
from emulator.stored_form import PROJECTION_V1_0, PROJECTION_V1_1
from tests.helpers import make_collection, make_item, wait_until

HEADERS = {"Authorization": "Bearer dev"}
VERSION = {"api-version": "2025-04-30-preview"}
STORAGE_HREF = re.compile(r"^https://geocatalogemulator\.blob\.core\.windows\.net/landcover-[0-9a-f]{8}/[0-9a-f]{3}/")


@pytest.fixture
def slow() -> Iterator[EmulatorServer]:
    """Operations stay Pending for a minute unless the test changes the timings."""
    with EmulatorServer(EmulatorOptions(timings=Timings(60, 0.05))) as server:
        yield server


def call(server: EmulatorServer, method: str, path: str, body: Any = None, **params: str) -> requests.Response:
    return requests.request(method, f"{server.url}{path}", params={**VERSION, **params}, json=body, headers=HEADERS, timeout=10)


def finished(server: EmulatorServer, accepted: requests.Response) -> dict[str, Any]:
    url = accepted.headers["operation-location"]
    return wait_until(lambda: (op := requests.get(url, headers=HEADERS, timeout=10).json())["status"] in
                      ("Succeeded", "Failed", "Canceled") and op, timeout=10)


def with_collection(server: EmulatorServer) -> None:
    server.call(lambda: server.catalog.put_collection(make_collection("landcover")))


def ingest(server: EmulatorServer, *items: dict[str, Any]) -> dict[str, Any]:
    accepted = call(server, "POST", "/stac/collections/landcover/items", {"type": "FeatureCollection", "features": list(items)})
    assert accepted.status_code == 202
    return finished(server, accepted)


def test_a_stored_item_has_its_assets_in_the_catalogs_storage_and_projection_v1_1(emulator: EmulatorServer) -> None:
    with_collection(emulator)
    sent = make_item("tile-1", "landcover", stac_extensions=[PROJECTION_V1_0, "https://example.com/other/v1.0.0/schema.json"])
    sent["assets"]["thumbnail"] = {"href": "https://example.com/thumbs/tile-1.png?sv=1&sig=SECRET", "roles": ["thumbnail"]}
    sent["assets"]["relative"] = {"href": "./tile-1.json"}
    operation = ingest(emulator, sent)
    held = call(emulator, "GET", "/stac/collections/landcover/items/tile-1").json()
    data, thumbnail = held["assets"]["data"]["href"], held["assets"]["thumbnail"]["href"]
    assert STORAGE_HREF.match(data) and data.endswith("/tile-1/data.tif")
    assert STORAGE_HREF.match(thumbnail) and thumbnail.endswith("/tile-1/thumbnail.png")  # no token kept
    assert held["assets"]["relative"]["href"] == "./tile-1.json"  # not a URL it could copy: kept as sent
    assert held["assets"]["data"]["roles"] == ["data"] and held["assets"]["thumbnail"]["roles"] == ["thumbnail"]
    assert held["stac_extensions"] == [PROJECTION_V1_1, "https://example.com/other/v1.0.0/schema.json"]
    assert held["_msft:ts"] == operation["finishTime"]
    same = {"type", "stac_version", "id", "geometry", "bbox", "properties", "collection"}
    assert {k: held[k] for k in same} == {k: sent[k] for k in same}
    assert emulator.call(lambda: emulator.catalog.sent_items("landcover")) == {"tile-1": sent}  # what was sent, kept


def test_an_unparseable_href_is_kept_as_sent_and_the_emulator_goes_on(emulator: EmulatorServer) -> None:
    with_collection(emulator)
    odd = make_item("odd", "landcover")
    odd["assets"]["data"]["href"] = "http://[not-a-host/x.tif"
    assert ingest(emulator, odd, make_item("fine", "landcover"))["status"] == "Succeeded"
    held = call(emulator, "GET", "/stac/collections/landcover/items/odd").json()
    assert held["assets"]["data"]["href"] == "http://[not-a-host/x.tif"


def test_search_pages_return_the_stored_form_too(emulator: EmulatorServer) -> None:
    with_collection(emulator)
    ingest(emulator, make_item("s1", "landcover"))
    found = call(emulator, "POST", "/stac/search", {"collections": ["landcover"]}).json()["features"]
    assert STORAGE_HREF.match(found[0]["assets"]["data"]["href"])


def test_a_patch_is_merged_into_what_was_sent_and_stored_rewritten(emulator: EmulatorServer) -> None:
    with_collection(emulator)
    ingest(emulator, make_item("p1", "landcover"))
    patched = finished(emulator, call(emulator, "PATCH", "/stac/collections/landcover/items/p1", {"properties": {"title": "new"}}))
    assert patched["status"] == "Succeeded"
    sent = emulator.call(lambda: emulator.catalog.sent_items("landcover"))["p1"]
    assert sent["properties"]["title"] == "new" and sent["assets"] == make_item("p1")["assets"]
    assert STORAGE_HREF.match(call(emulator, "GET", "/stac/collections/landcover/items/p1").json()["assets"]["data"]["href"])


def test_sending_the_catalogs_own_copy_back_fails_with_public_access_restricted() -> None:
    with EmulatorServer(EmulatorOptions(timings=Timings(0.05, 0.05), faults=Faults(require_signed_assets=True))) as server:
        with_collection(server)
        signed = make_item("own", "landcover")
        signed["assets"]["data"]["href"] += "?sv=1&sig=abc"
        assert ingest(server, signed)["status"] == "Succeeded"
        copy = call(server, "GET", "/stac/collections/landcover/items/own").json()
        operation = finished(server, call(server, "PUT", "/stac/collections/landcover/items/own", copy))
        last = operation["statusHistory"][-1]
        assert (operation["status"], last["errorCode"]) == ("Failed", "PublicAccessRestricted")
        assert "Public access is not permitted on this storage account" in last["errorMessage"]


def test_a_pending_operation_has_no_counters_and_an_item_operation_starts_at_its_creation(slow: EmulatorServer) -> None:
    with_collection(slow)
    accepted = call(slow, "POST", "/stac/collections/landcover/items", make_item("x", "landcover"))
    assert accepted.status_code == 202 and "additionalInformation" not in accepted.json()
    pending = requests.get(accepted.headers["operation-location"], headers=HEADERS, timeout=10).json()
    assert pending["status"] == "Pending" and "additionalInformation" not in pending and "startTime" not in pending
    requests.patch(f"{slow.url}/_emulator/timings", json={"pending_seconds": 0}, timeout=10).raise_for_status()
    done = ingest(slow, make_item("y", "landcover"))
    assert done["startTime"] == done["creationTime"] and done["additionalInformation"]["TotalSuccessfulItems"] == "1"


def test_collection_operations_are_add_collection_with_no_times_or_counters(emulator: EmulatorServer) -> None:
    accepted = call(emulator, "POST", "/stac/collections", make_collection("landcover"))
    assert accepted.status_code == 202 and accepted.json()["type"] == "AddCollection"
    operation = finished(emulator, accepted)
    assert [h["status"] for h in operation["statusHistory"]] == ["Pending", "Running", "Finished"]
    assert not {"startTime", "finishTime", "additionalInformation"} & set(operation)


def test_a_second_delete_of_a_collection_is_accepted_and_fails_with_execution_error(emulator: EmulatorServer) -> None:
    with_collection(emulator)
    first = finished(emulator, call(emulator, "DELETE", "/stac/collections/landcover"))
    assert (first["type"], first["status"]) == ("DeleteCollection", "Succeeded")
    again = call(emulator, "DELETE", "/stac/collections/landcover")
    assert again.status_code == 202
    second = finished(emulator, again)
    assert (second["status"], second["statusHistory"][-1]["errorCode"]) == ("Failed", "ExecutionError")
    assert second["statusHistory"][-1]["errorMessage"] == "Collection with id 'landcover' not exists in the geo-catalog"


def test_an_operation_canceled_while_pending_has_only_its_canceled_entry(slow: EmulatorServer) -> None:
    with_collection(slow)
    accepted = call(slow, "POST", "/stac/collections/landcover/items", make_item("c", "landcover"))
    operation_id = accepted.json()["id"]
    assert call(slow, "DELETE", f"/inma/operations/{operation_id}").status_code == 204
    requests.patch(f"{slow.url}/_emulator/timings", json={"pending_seconds": 0}, timeout=10).raise_for_status()
    canceled = call(slow, "GET", f"/inma/operations/{operation_id}").json()
    assert canceled["status"] == "Canceled" and "startTime" not in canceled and "error" not in canceled
    (entry,) = canceled["statusHistory"]
    assert (entry["status"], entry["errorCode"]) == ("Canceled", "CanceledOperation")
    assert entry["errorMessage"] == f"Operation '{operation_id}' for collection 'landcover' has been cancelled"
    assert canceled["finishTime"] == entry["timestamp"]
    assert call(slow, "GET", "/stac/collections/landcover/items/c").status_code == 404  # never applied


def test_an_operation_canceled_while_running_ends_canceled_with_no_running_after_it() -> None:
    with EmulatorServer(EmulatorOptions(timings=Timings(0, 0.05), faults=Faults(stuck_operations_fraction=1.0))) as server:
        with_collection(server)
        accepted = call(server, "POST", "/stac/collections/landcover/items", make_item("r", "landcover"))
        url = accepted.headers["operation-location"]
        wait_until(lambda: requests.get(url, headers=HEADERS, timeout=10).json()["status"] == "Running")
        assert call(server, "DELETE", "/inma/operations").status_code == 204
        canceled = requests.get(url, headers=HEADERS, timeout=10).json()
        assert [h["status"] for h in canceled["statusHistory"]] == ["Pending", "Running", "Canceled"]
        assert canceled["statusHistory"][-1]["errorCode"] == "CanceledOperation"
        assert canceled["additionalInformation"]["TotalPendingItems"] == "1"


def test_item_and_search_pages_link_self_and_root_and_carry_no_count(emulator: EmulatorServer) -> None:
    with_collection(emulator)
    ingest(emulator, *(make_item(f"i{n}", "landcover") for n in range(3)))
    page = call(emulator, "GET", "/stac/collections/landcover/items", limit="2").json()
    assert set(page) == {"type", "features", "links"}
    links = {link["rel"]: link for link in page["links"]}
    assert list(links) == ["collection", "parent", "root", "self", "next"]
    assert links["root"]["href"] == f"{emulator.url}/stac/"
    assert links["collection"]["href"] == links["parent"]["href"] == f"{emulator.url}/stac/collections/landcover"
    assert links["self"]["href"].startswith(f"{emulator.url}/stac/collections/landcover/items?")
    assert "limit=2" in links["next"]["href"] and "token=" in links["next"]["href"]
    search = call(emulator, "POST", "/stac/search", {"collections": ["landcover"], "limit": 2}).json()
    assert set(search) == {"type", "features", "links"}
    assert [link["rel"] for link in search["links"]] == ["next", "root", "self"]
    assert "merge" not in search["links"][0] and search["links"][0]["body"]["collections"] == ["landcover"]


def test_a_collection_read_back_carries_its_links_and_timestamps(emulator: EmulatorServer) -> None:
    finished(emulator, call(emulator, "POST", "/stac/collections", make_collection("landcover")))
    created = call(emulator, "GET", "/stac/collections/landcover").json()
    assert [link["rel"] for link in created["links"]] == ["items", "parent", "root", "self"]
    assert created["links"][0]["href"] == f"{emulator.url}/stac/collections/landcover/items"
    assert created["msft:_created"] == created["msft:_updated"]
    replaced = call(emulator, "PUT", "/stac/collections/landcover", {**make_collection("landcover"), "title": "renamed"}).json()
    assert replaced["msft:_created"] == created["msft:_created"] and replaced["msft:_updated"] >= created["msft:_updated"]
    listed = call(emulator, "GET", "/stac/collections").json()["collections"]
    assert listed[0]["title"] == "renamed" and listed[0]["links"] == replaced["links"]


def test_the_sent_copy_survives_a_restart(tmp_path) -> None:
    path = str(tmp_path / "catalog.sqlite")
    with EmulatorServer(EmulatorOptions(timings=Timings(0, 0), sqlite_path=path)) as server:
        with_collection(server)
        ingest(server, make_item("kept", "landcover"))
    with EmulatorServer(EmulatorOptions(sqlite_path=path)) as server:
        assert server.call(lambda: server.catalog.sent_items("landcover")) == {"kept": make_item("kept", "landcover")}
        assert STORAGE_HREF.match(call(server, "GET", "/stac/collections/landcover/items/kept").json()["assets"]["data"]["href"])
