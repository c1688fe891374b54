"""HTTP transports for the storage clients and the GeoCatalog, without per-request environment lookups.

requests, with `trust_env` (its default), looks the proxy variables, NO_PROXY, ~/.netrc and the CA
bundle variables up again on every request: 8-10 % of the client CPU of a table read here, on every
storage and GeoCatalog call of every batch. Unless a proxy is configured, this reads the only thing
that can matter, the CA bundle, once, and switches the lookup off. With a proxy configured (a
developer's network), requests keeps reading the environment as usual. A ~/.netrc is never wanted
here: every call carries its own Authorization, which netrc credentials would replace.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import requests
from azure.core.pipeline.transport import RequestsTransport


def proxies_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether any `*_proxy` / `*_PROXY` variable (NO_PROXY included) is set: then requests must keep reading them."""
    env = os.environ if env is None else env
    return any(value and name.lower().endswith("_proxy") for name, value in env.items())


def ca_bundle(env: Mapping[str, str] | None = None) -> str | None:
    """The CA bundle requests would take from the environment (REQUESTS_CA_BUNDLE, then CURL_CA_BUNDLE)."""
    env = os.environ if env is None else env
    return env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or None


def configure_session(session: requests.Session, env: Mapping[str, str] | None = None) -> requests.Session:
    """`session`, reading the environment once instead of per request when no proxy is configured.

    Requests that pass `verify=True` explicitly would skip the bundle set here: pass `None` for "the default".
    """
    if not proxies_configured(env):
        session.trust_env = False
        session.verify = ca_bundle(env) or True
    return session


# What the storage SDKs pass to the transport they build for themselves (azure-storage-blob and -queue,
# `_shared/constants.py`): a transport handed to them must carry the same, or it has azure-core's
# defaults, 300 s connect and read timeouts and 4 KB read blocks (a 290 KB range read in 71 steps).
STORAGE_CONNECTION = {"connection_timeout": 20, "read_timeout": 60, "connection_data_block_size": 256 * 1024}


def sdk_transport_options(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for an Azure SDK client: its own requests transport, configured as `configure_session`
    does, with the storage SDKs' own timeouts and read block size."""
    if proxies_configured(env):
        return {}
    return {"transport": RequestsTransport(use_env_settings=False, connection_verify=ca_bundle(env) or True, **STORAGE_CONNECTION)}


SDK_REQUEST_LOGGER = "azure.core.pipeline.policies.http_logging_policy"


def quiet_sdk_request_logs() -> None:
    """Keep the Azure SDKs' request and response headers out of the worker's logs, unless asked for.

    azure-core logs every request's URL and headers, and every response's, at INFO; the Functions
    worker forwards INFO to the host and Application Insights (azure-sdk-for-python#17961). For this
    app that is some twenty lines for each of the ~15 storage calls of every batch: log volume and
    CPU for nothing an operator reads. Failures still surface as the SDK's exceptions. A level
    someone set on that logger on purpose (e.g. DEBUG while investigating) is left as it is.
    """
    logger = logging.getLogger(SDK_REQUEST_LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
