"""The local emulator's collections: `submit` creates a missing one there (as `make demo` does).

Only ever against the emulator that `up` started; a real GeoCatalog's collections are an operator's
decision, so nothing here is called for one.
"""

from __future__ import annotations

from shared.catalog import GeoCatalogClient, StaticToken, check_collection_id
from shared.errors import NotFoundError


def ensure_collection(emulator_url: str, token: str, collection_id: str) -> bool:
    """Create `collection_id` in the emulator unless it exists; True when it was created."""
    catalog = GeoCatalogClient(emulator_url, StaticToken(token or "local-dev-token"), timeout=10)
    try:
        catalog.get_collection(check_collection_id(collection_id))
        return False
    except NotFoundError:
        pass
    catalog.create_collection({
        "type": "Collection", "stac_version": "1.1.0", "id": collection_id, "title": collection_id,
        "description": f"{collection_id} (created by geocatalog-ingest submit on the local emulator)",
        "license": "proprietary", "links": [],
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
    })
    return True
