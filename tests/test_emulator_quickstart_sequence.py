"""The quickstart notebook's own request sequence (api-version 2024-01-31-preview), verbatim in shape."""

from __future__ import annotations

import time

import requests

from emulator import EmulatorOptions, EmulatorServer, Faults, Timings
from tests.conftest import ROOT
from tests.helpers import make_collection, make_item


def test_quickstart_requests_work_against_the_emulator(emulator: EmulatorServer) -> None:
    geocatalog_url = emulator.url
    headers = {"Authorization": "Bearer token-from-get_token"}
    params = {"api-version": "2024-01-31-preview"}
    collection_id = "io-lulc-annual-v02-demo"
    requests.post(f"{geocatalog_url}/api/collections", json=make_collection(collection_id), headers=headers, params=params, timeout=5).raise_for_status()

    items = {"type": "FeatureCollection", "features": [make_item(f"lulc-{i}") for i in range(4)]}
    for item in items["features"]:
        item["collection"] = collection_id
    response = requests.post(f"{geocatalog_url}/api/collections/{collection_id}/items", json=items, headers=headers, params=params, timeout=5)
    assert response.status_code == 202
    location = response.headers["location"]

    while True:  # the notebook's loop, with a shorter sleep
        response = requests.get(location, headers=headers, timeout=5)
        status = response.json()["status"]
        if status not in {"Pending", "Running"}:
            break
        time.sleep(0.05)
    assert status == "Succeeded"
    operation_id = response.json()["operationId"]

    logs = requests.get(f"{geocatalog_url}/api/collections/{collection_id}/operations/{operation_id}/logs", headers=headers, params=params, timeout=5)
    assert logs.status_code == 200 and "lulc-3" in logs.text

    listed = requests.get(f"{geocatalog_url}/api/collections/{collection_id}/items", headers=headers, params=params, timeout=5).json()
    assert sorted(f["id"] for f in listed["features"]) == [f"lulc-{i}" for i in range(4)]

    deleted = requests.delete(f"{geocatalog_url}/api/collections/{collection_id}/items/lulc-0", headers=headers, params=params, timeout=5)
    assert deleted.status_code == 202 and deleted.headers["location"]


def test_the_quickstarts_own_code_runs_unchanged_against_the_bundled_sample() -> None:
    """add-stac-item-to-collection.md step by step; only the two public Planetary Computer URLs are the emulator's."""
    samples = ROOT / "examples" / "landcover-items.json"
    options = EmulatorOptions(timings=Timings(0.05, 0.05), source_items=str(samples), faults=Faults(require_signed_assets=True))
    with EmulatorServer(options) as emulator:
        public_stac_search = f"{emulator.url}/source/search"  # https://planetarycomputer.microsoft.com/api/stac/v1/search
        public_sas_api = f"{emulator.url}/source/sas"  # https://planetarycomputer.microsoft.com/api/sas/v1
        geocatalog_url = emulator.url
        collection_id = "spatio-quickstart"
        requests.post(f"{geocatalog_url}/api/collections", json=make_collection(collection_id), params={"api-version": "2024-01-31-preview"},
                      headers={"Authorization": "Bearer t"}, timeout=5).raise_for_status()

        # Create item metadata
        response = requests.get(public_stac_search, params={"collections": "io-lulc-annual-v02", "ids": "23M-2023,23L-2023,24M-2023,24L-2023"}, timeout=5)
        item_collection = response.json()
        assert [f["id"] for f in item_collection["features"]] == ["23M-2023", "23L-2023", "24M-2023", "24L-2023"]
        sas_token = requests.get(f"{public_sas_api}/token/io-lulc-annual-v02", timeout=5).json()["token"]
        for item in item_collection["features"]:
            for asset in item["assets"].values():
                asset["href"] = "?".join([asset["href"], sas_token])
        for item in item_collection["features"]:
            item["collection"] = collection_id

        # Get an access token (any bearer token is accepted by the emulator)
        headers = {"Authorization": "Bearer token-from-DefaultAzureCredential"}

        # Add items to a collection
        response = requests.post(f"{geocatalog_url}/api/collections/{collection_id}/items?api-version=2024-01-31-preview",
                                 headers=headers, json=item_collection, timeout=5)
        assert response.status_code == 202
        location = response.headers["location"]
        status = wait_for_operation(location, headers)
        assert status == "Succeeded"
        operation_id = requests.get(location, headers=headers, timeout=5).json()["operationId"]
        logs_response = requests.get(f"{geocatalog_url}/api/collections/{collection_id}/operations/{operation_id}/logs",
                                     params={"api-version": "2024-01-31-preview"}, headers=headers, timeout=5)
        assert logs_response.status_code == 200 and all(i in logs_response.text for i in ("23M-2023", "24L-2023"))
        items_response = requests.get(f"{geocatalog_url}/api/collections/{collection_id}/items", headers=headers,
                                      params={"api-version": "2024-01-31-preview"}, timeout=5)
        items_ingested = items_response.json()
        assert len(items_ingested["features"]) == 4
        search_response = requests.get(f"{geocatalog_url}/api/collections/{collection_id}/items", headers=headers,
                                       params={"api-version": "2024-01-31-preview", "collection": collection_id}, timeout=5)
        assert search_response.status_code == 200

        # Delete Items from a Collection
        item_id = item_collection["features"][0]["id"]
        delete = requests.delete(f"{geocatalog_url}/api/collections/{collection_id}/items/{item_id}", headers=headers,
                                 params={"api-version": "2024-01-31-preview"}, timeout=5)
        assert delete.status_code == 202
        assert wait_for_operation(delete.headers["location"], headers) == "Succeeded"
        left = requests.get(f"{geocatalog_url}/api/collections/{collection_id}/items", headers=headers,
                            params={"api-version": "2024-01-31-preview"}, timeout=5).json()
        assert sorted(f["id"] for f in left["features"]) == ["23L-2023", "24L-2023", "24M-2023"]


def wait_for_operation(location: str, headers: dict[str, str]) -> str:
    while True:  # the quickstart's loop, with a shorter sleep
        status = requests.get(location, headers=headers, timeout=5).json()["status"]
        if status not in {"Pending", "Running"}:
            return status
        time.sleep(0.05)
