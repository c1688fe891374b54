"""Settings are read in one place and name every problem at once."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.settings import Settings, StorageAccess


def test_defaults_and_overrides() -> None:
    settings = Settings.from_env({"GEOCATALOG_ENDPOINT": "https://gc", "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                                  "BATCH_MAX_ITEMS": "50", "SOURCE_URL_ALLOWLIST": "A.example, b.example"})
    assert settings.batch_max_items == 50 and settings.submit_queue == "stac-submit"
    assert settings.geocatalog_api_version == "2026-04-15"
    assert settings.source_url_allowlist == ("a.example", "b.example")
    assert settings.storage == StorageAccess(connection_string="UseDevelopmentStorage=true")


def test_all_problems_are_named_together() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"BATCH_MAX_ITEMS": "many"})
    text = str(raised.value)
    assert "GEOCATALOG_ENDPOINT is required" in text and "BATCH_MAX_ITEMS" in text and "AzureWebJobsStorage" in text


def test_managed_identity_storage_settings() -> None:
    by_account = StorageAccess.from_env({"AzureWebJobsStorage__accountName": "acct"}, "AzureWebJobsStorage")
    assert by_account.queue_uri == "https://acct.queue.core.windows.net" and not by_account.connection_string
    uris = {f"AzureWebJobsStorage__{k}ServiceUri": f"https://{k}.x" for k in ("queue", "blob", "table")}
    assert StorageAccess.from_env(uris, "AzureWebJobsStorage").table_uri == "https://table.x"


def test_outbound_and_blob_reference_settings() -> None:
    base = {"GEOCATALOG_ENDPOINT": "https://gc", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    default = Settings.from_env(base)
    assert default.source_allow_loopback is False  # Azure never reaches loopback on a message's behalf
    assert default.readable_containers == ("stac-payloads", "stac-drop")
    local = Settings.from_env({**base, "SOURCE_ALLOW_LOOPBACK": "true", "ITEMS_REF_CONTAINERS": "inbox, user-items"})
    assert local.source_allow_loopback is True and local.readable_containers == ("inbox", "user-items")
    with pytest.raises(ConfigurationError, match="SOURCE_ALLOW_LOOPBACK"):
        Settings.from_env({**base, "SOURCE_ALLOW_LOOPBACK": "yes please"})


def test_poll_and_pacing_settings_have_production_defaults_and_a_checked_schedule() -> None:
    base = {"GEOCATALOG_ENDPOINT": "https://gc", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    settings = Settings.from_env(base)
    assert (settings.poll_schedule, settings.poll_step_fraction, settings.poll_min_step_seconds) == ("predicted", 0.1, 2.0)
    assert (settings.geocatalog_max_calls_per_second, settings.geocatalog_max_instances) == (40.0, 2)
    assert Settings.from_env({**base, "POLL_SCHEDULE": "backoff"}).poll_schedule == "backoff"
    with pytest.raises(ConfigurationError, match="POLL_SCHEDULE='sometimes' is not one of predicted, backoff"):
        Settings.from_env({**base, "POLL_SCHEDULE": "sometimes"})
