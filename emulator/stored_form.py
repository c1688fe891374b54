"""How the service stores an item: not as sent (GEOCATALOG_API.md, "Seen in the SDK's recorded live tests").

The real GeoCatalog copies each asset into its own Blob Storage and stores the item with hrefs to the
copies, `https://<account>.blob.core.windows.net/<collection>-<8 hex>/<3 hex>/<item id>/<asset>.<ext>`,
and upgrades the projection extension from v1.0.0 to v1.1.0. The recordings show one account, one
container per collection and a 3-hex prefix that differs per item; here both hex parts are hashes, so a
restart (or a second emulator) stores the same hrefs.

UNKNOWN, and chosen here: hrefs that are not absolute http(s) URLs (relative paths, `s3://`, ...) are
kept as sent, since the emulator never fetches anything; an asset without an extension in its URL path
is stored without one; other extensions keep their versions.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from posixpath import splitext
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

STORAGE_ACCOUNT = "geocatalogemulator"
STORAGE_HOST = f"{STORAGE_ACCOUNT}.blob.core.windows.net"
PROJECTION_V1_0 = "https://stac-extensions.github.io/projection/v1.0.0/schema.json"
PROJECTION_V1_1 = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"


def stored_form(item: dict[str, Any], collection_id: str) -> dict[str, Any]:
    """A copy of `item` as the catalog keeps it: hrefs to its own storage, extensions upgraded."""
    stored = dict(item)
    assets = item.get("assets")
    if isinstance(assets, dict):
        folder = _item_folder(collection_id, str(item.get("id")))
        stored["assets"] = {key: _copied_asset(asset, folder, str(key)) for key, asset in assets.items()}
    extensions = item.get("stac_extensions")
    if isinstance(extensions, list):
        stored["stac_extensions"] = [PROJECTION_V1_1 if url == PROJECTION_V1_0 else url for url in extensions]
    return stored


def is_own_storage(href: str) -> bool:
    """An href to the catalog's own (private) storage, which it cannot read back anonymously."""
    parts = _split(href)
    return parts is not None and (parts.hostname or "").lower() == STORAGE_HOST


def _copied_asset(asset: Any, folder: str, key: str) -> Any:
    parts = _split(asset.get("href") if isinstance(asset, dict) else None)
    if parts is None or parts.scheme.lower() not in ("http", "https"):
        return asset
    extension = splitext(unquote(parts.path))[1]
    return {**asset, "href": f"{folder}/{quote(key + extension, safe='')}"}


def _split(href: Any) -> SplitResult | None:
    """The parts of an href, or None for one that is not a string or not a parseable URL."""
    try:
        parts = urlsplit(href) if isinstance(href, str) else None
        _ = parts and parts.hostname  # an invalid host ("http://[x") raises only when read
    except ValueError:
        return None
    return parts


def _item_folder(collection_id: str, item_id: str) -> str:
    return f"{_container_url(collection_id)}/{_hex(item_id, 3)}/{quote(item_id, safe='')}"


@lru_cache(maxsize=1024)
def _container_url(collection_id: str) -> str:
    return f"https://{STORAGE_HOST}/{collection_id.lower()}-{_hex(collection_id, 8)}"


def _hex(text: str, digits: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:digits]
