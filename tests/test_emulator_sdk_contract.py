"""Contract: the official azure-planetarycomputer SDK works against the emulator with no special cases.

The only non-default client options are the ones any user of a private endpoint sets: trusting the
emulator's self-signed certificate (`connection_verify`) and a short LRO `polling_interval`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.planetarycomputer import PlanetaryComputerProClient

from emulator import EmulatorServer
from tests.helpers import make_collection, make_item


class DevCredential:
    """A TokenCredential that hands out a fixed token (the emulator accepts any)."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("dev-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, **kwargs: object) -> AccessTokenInfo:
        return AccessTokenInfo("dev-token", int(time.time()) + 3600)


@pytest.fixture
def sdk(tls_emulator: EmulatorServer, tls_pem: Path) -> PlanetaryComputerProClient:
    client = PlanetaryComputerProClient(
        tls_emulator.url, DevCredential(), connection_verify=str(tls_pem), polling_interval=0.05
    )
    client.stac.begin_create_collection(make_collection("landcover")).result()
    return client


def test_create_collection_then_get_it(sdk: PlanetaryComputerProClient) -> None:
    collection = sdk.stac.get_collection("landcover")
    assert collection.id == "landcover"


def test_create_single_item_polled_to_completion(sdk: PlanetaryComputerProClient) -> None:
    sdk.stac.begin_create_item("landcover", make_item("tile-1", "landcover")).result()
    item = sdk.stac.get_item("landcover", "tile-1")
    assert item.id == "tile-1"
    assert item["properties"]["datetime"] == "2023-01-01T00:00:00Z"


def test_create_feature_collection_polled_to_completion(sdk: PlanetaryComputerProClient) -> None:
    features = [make_item(f"tile-{i}", "landcover") for i in range(5)]
    sdk.stac.begin_create_item("landcover", {"type": "FeatureCollection", "features": features}).result()
    for i in range(5):
        assert sdk.stac.get_item("landcover", f"tile-{i}").id == f"tile-{i}"


def test_duplicate_create_fails_the_lro_with_the_service_code(sdk: PlanetaryComputerProClient) -> None:
    sdk.stac.begin_create_item("landcover", make_item("dup", "landcover")).result()
    with pytest.raises(HttpResponseError):
        sdk.stac.begin_create_item("landcover", make_item("dup", "landcover")).result()
    failed = [op for op in sdk.ingestion.list_operations(status="Failed")]
    assert failed[0].status_history[-1].error_code == "ItemAlreadyExistsInCollection"


def test_get_item_collection_pages_with_token(sdk: PlanetaryComputerProClient) -> None:
    features = [make_item(f"p-{i:02d}", "landcover") for i in range(25)]
    sdk.stac.begin_create_item("landcover", {"type": "FeatureCollection", "features": features}).result()
    seen: list[str] = []
    page = sdk.stac.get_item_collection("landcover", limit=10)
    while True:
        seen += [f.id for f in page.features]
        next_link = next((link for link in page.links or [] if link.rel == "next"), None)
        if next_link is None:
            break
        token = next_link.href.split("token=")[1].split("&")[0]
        page = sdk.stac.get_item_collection("landcover", limit=10, token=token)
    assert seen == [f"p-{i:02d}" for i in range(25)]


def test_delete_item_is_a_long_running_operation(sdk: PlanetaryComputerProClient) -> None:
    sdk.stac.begin_create_item("landcover", make_item("gone", "landcover")).result()
    sdk.stac.begin_delete_item("landcover", "gone").result()
    with pytest.raises(ResourceNotFoundError):
        sdk.stac.get_item("landcover", "gone")


def test_get_and_list_operations(sdk: PlanetaryComputerProClient) -> None:
    sdk.stac.begin_create_item("landcover", make_item("op-1", "landcover")).result()
    operations = list(sdk.ingestion.list_operations(collection_id="landcover"))
    add = next(op for op in operations if op.type == "AddItem")
    fetched = sdk.ingestion.get_operation(add.id)
    assert fetched.status == "Succeeded"
    assert [h.status for h in fetched.status_history] == ["Pending", "Running", "Finished"]
    assert fetched.additional_information["TotalSuccessfulItems"] == "1"


def test_list_operations_pages_with_next_link(sdk: PlanetaryComputerProClient) -> None:
    for i in range(4):
        sdk.stac.begin_create_item("landcover", make_item(f"n-{i}", "landcover")).result()
    operations = list(sdk.ingestion.list_operations(top=2))
    assert len(operations) == 5  # the collection's creation + 4 item operations, over 3 pages


def test_unknown_collection_is_resource_not_found(sdk: PlanetaryComputerProClient) -> None:
    with pytest.raises(ResourceNotFoundError) as raised:
        sdk.stac.get_collection("nope-collection")
    assert raised.value.error.code == "ResourceNotFound"
