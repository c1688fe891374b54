"""Bearer tokens for the GeoCatalog: Entra ID via azure-identity, or a static token for local runs."""

from __future__ import annotations

import threading
import time
from typing import Protocol

from azure.core.credentials import AccessToken, TokenCredential

GEOCATALOG_SCOPE = "https://geocatalog.spatio.azure.com/.default"
REFRESH_MARGIN_SECONDS = 300


class TokenProvider(Protocol):
    """Anything that hands out a current bearer token."""

    def token(self) -> str: ...


class StaticToken:
    """A fixed token: for the emulator and local runs only."""

    def __init__(self, value: str) -> None:
        self._value = value

    def token(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"


class CredentialToken:
    """Tokens from an azure-identity credential, cached and refreshed `REFRESH_MARGIN_SECONDS` before expiry.

    Thread-safe: the Functions worker may run several invocations at once.
    """

    def __init__(self, credential: TokenCredential, scope: str = GEOCATALOG_SCOPE, clock=time.time) -> None:
        self._credential = credential
        self._scope = scope
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: AccessToken | None = None

    def token(self) -> str:
        with self._lock:
            if self._cached is None or self._cached.expires_on - self._clock() < REFRESH_MARGIN_SECONDS:
                self._cached = self._credential.get_token(self._scope)
            return self._cached.token

    def __repr__(self) -> str:
        return f"CredentialToken(scope={self._scope!r})"


def default_token_provider(static_token: str = "") -> TokenProvider:
    """A static token when one is configured, else DefaultAzureCredential (managed identity in Azure)."""
    if static_token:
        return StaticToken(static_token)
    from azure.identity import DefaultAzureCredential

    return CredentialToken(DefaultAzureCredential())
