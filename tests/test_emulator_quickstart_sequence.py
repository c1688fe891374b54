"""The quickstart notebook's own request sequence (api-version 2024-01-31-preview), verbatim in shape."""

from __future__ import annotations

import time

import requests

from emulator import EmulatorServer
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
