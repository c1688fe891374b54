"""Signing asset hrefs with Planetary Computer SAS tokens, so the GeoCatalog can copy the assets.

A SAS token opens one storage container, and the Planetary Computer SAS API issues one per storage
account and container: `{SAS_API_URL}/token/{account}/{container}` answers
`{"token": "...", "msft:expiry": "..."}` (what the `planetary-computer` package's `sign` asks too).
So an href gets the token of its own account and container, and no other: an item's author who
points an asset at a host of their choosing (`https://attacker.blob.core.windows.net/...`) gets at
most a token for that host's own container, never one of the source collection's.

Only `https://<account>.blob.core.windows.net/<container>/<blob>` hrefs without a query are signed.
An href with a backslash, an `@` or a control character never gets this far: validation rejects its
item (`shared.items.href_problem`); the signer refuses it again rather than trust that. Tokens are cached per
account and container until shortly before they expire. Items are signed by the submitter right
before the POST: what is stored (payload blobs, rows, logs) keeps hrefs without a query string, and a
retry an hour later gets a fresh token instead of an expired one.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from shared.errors import InvalidInputError
from shared.inputs.egress import GuardedSession
from shared.items import href_problem

MAX_REFRESH_MARGIN_SECONDS = 300.0
BLOB_HOST_SUFFIX = ".blob.core.windows.net"
_ACCOUNT = re.compile(r"\A[a-z0-9]{3,24}\Z")
_CONTAINER = re.compile(r"\A(?:\$root|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62})\Z")


def storage_container_of(href: str) -> tuple[str, str] | None:
    """(account, container) of an https Azure Blob Storage href without a query string, else None."""
    parts = urlsplit(href)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or parts.query or parts.port or parts.username is not None or not host.endswith(BLOB_HOST_SUFFIX):
        return None
    account = host.removesuffix(BLOB_HOST_SUFFIX)
    container, _, blob = parts.path.lstrip("/").partition("/")
    if not _ACCOUNT.match(account) or not _CONTAINER.match(container) or not blob:
        return None
    return account, container


class SasTokenSigner:
    """Gets, caches and applies SAS tokens from a Planetary Computer SAS API."""

    def __init__(self, sas_api: str, session: GuardedSession, *, clock: Callable[[], float] = time.time) -> None:
        self._api = sas_api.rstrip("/")
        self._session = session
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[str, float, float]] = {}  # (account, container) -> (token, expires, fetched)

    def token(self, account: str, container: str) -> str:
        """A token for `container` of storage `account` that is valid for a while yet.

        Raises:
            InvalidInputError: the SAS API refuses that account or container.
            RetryableError: the SAS API is briefly unavailable.
        """
        key = (account, container)
        with self._lock:
            cached = self._cache.get(key)
            now = self._clock()
            if cached is not None:
                token, expires, fetched = cached
                margin = min(MAX_REFRESH_MARGIN_SECONDS, (expires - fetched) / 5)
                if now < expires - margin:
                    return token
            token, expires = self._fetch(account, container)
            self._cache[key] = (token, expires, now)
            return token

    def sign(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of `items` with every signable asset href carrying the token of its account and container.

        Raises:
            InvalidInputError: an asset href has a backslash, `@` or a control character, or the SAS
                API refuses an href's account or container.
        """
        return [{**item, "assets": {key: self._signed(item, key, asset) for key, asset in (item.get("assets") or {}).items()}}
                for item in items]

    def _signed(self, item: dict[str, Any], key: str, asset: Any) -> Any:
        href = asset.get("href") if isinstance(asset, dict) else None
        if not isinstance(href, str):
            return asset
        problem = href_problem(href)
        if problem:
            raise InvalidInputError(f"item {str(item.get('id'))[:64]!r} asset {str(key)[:64]!r}: the href {problem}; "
                                    "it is neither signed nor sent")
        where = storage_container_of(href)
        if where is None:
            return asset
        return {**asset, "href": f"{href}?{self.token(*where)}"}

    def _fetch(self, account: str, container: str) -> tuple[str, float]:
        body, _ = self._session.get_json("GET", f"{self._api}/token/{account}/{container}")
        try:
            expires = datetime.fromisoformat(str(body["msft:expiry"]).replace("Z", "+00:00")).timestamp()
            token = str(body["token"])
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError(f"the SAS API's answer for {account}/{container} has no token and expiry") from None
        return token, expires
