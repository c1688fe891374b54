"""Signing asset hrefs with Planetary Computer SAS tokens, so the GeoCatalog can copy the assets.

`{SAS_API_URL}/token/{collection}` answers `{"token": "...", "msft:expiry": "..."}`. Tokens are cached
per collection until shortly before they expire. Items are signed by the submitter right before the
POST: what is stored (payload blobs, rows, logs) keeps hrefs without a query string, and a retry an
hour later gets a fresh token instead of an expired one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from shared.egress import GuardedSession
from shared.errors import InvalidInputError
from shared.geocatalog import check_collection_id

SIGN_PLANETARY_COMPUTER = "planetary-computer"
MAX_REFRESH_MARGIN_SECONDS = 300.0


def is_signable(href: str) -> bool:
    """Azure Blob Storage URLs without a query string (what the planetary-computer package signs)."""
    parts = urlsplit(href)
    return parts.scheme == "https" and (parts.hostname or "").endswith(".blob.core.windows.net") and not parts.query


class SasTokenSigner:
    """Gets, caches and applies SAS tokens from a Planetary Computer SAS API."""

    def __init__(self, sas_api: str, session: GuardedSession, *, clock: Callable[[], float] = time.time) -> None:
        self._api = sas_api.rstrip("/")
        self._session = session
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float, float]] = {}  # collection -> (token, expires, fetched)
        self.fetches = 0

    def token(self, collection: str) -> str:
        """A token for `collection` that is valid for a while yet.

        Raises:
            InvalidInputError: the SAS API refuses the collection.
            RetryableError: the SAS API is briefly unavailable.
        """
        with self._lock:
            cached = self._cache.get(collection)
            now = self._clock()
            if cached is not None:
                token, expires, fetched = cached
                margin = min(MAX_REFRESH_MARGIN_SECONDS, (expires - fetched) / 5)
                if now < expires - margin:
                    return token
            token, expires = self._fetch(check_collection_id(collection))
            self._cache[collection] = (token, expires, now)
            return token

    def sign(self, items: list[dict[str, Any]], collection: str) -> list[dict[str, Any]]:
        """Copies of `items` with every signable asset href carrying the collection's token."""
        token = self.token(collection)
        signed = []
        for item in items:
            assets = {
                key: {**asset, "href": f"{asset['href']}?{token}"}
                if isinstance(asset, dict) and isinstance(asset.get("href"), str) and is_signable(asset["href"]) else asset
                for key, asset in (item.get("assets") or {}).items()
            }
            signed.append({**item, "assets": assets})
        return signed

    def _fetch(self, collection: str) -> tuple[str, float]:
        body, _ = self._session.get_json("GET", f"{self._api}/token/{collection}")
        try:
            expires = datetime.fromisoformat(str(body["msft:expiry"]).replace("Z", "+00:00")).timestamp()
            token = str(body["token"])
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError(f"the SAS API's answer for collection {collection!r} has no token and expiry") from None
        self.fetches += 1
        return token, expires
