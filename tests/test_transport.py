"""HTTP transports that read the environment once, unless a proxy needs it read per request."""

import logging

import requests

from shared.catalog.transport import ca_bundle, configure_session, proxies_configured, sdk_transport_options

NO_PROXY_ENV = {"PATH": "/usr/bin", "REQUESTS_CA_BUNDLE": "/etc/ssl/corp.pem", "CURL_CA_BUNDLE": "/etc/ssl/other.pem"}


def test_any_proxy_variable_counts_in_either_case_and_an_empty_one_does_not():
    assert proxies_configured({"HTTPS_PROXY": "http://proxy:3128"})
    assert proxies_configured({"no_proxy": "localhost"})
    assert proxies_configured({"ALL_PROXY": "socks5://proxy"})
    assert not proxies_configured({"HTTPS_PROXY": "", "PATH": "/usr/bin"})
    assert not proxies_configured(NO_PROXY_ENV)


def test_the_ca_bundle_is_the_one_requests_would_pick():
    assert ca_bundle(NO_PROXY_ENV) == "/etc/ssl/corp.pem"
    assert ca_bundle({"CURL_CA_BUNDLE": "/etc/ssl/other.pem"}) == "/etc/ssl/other.pem"
    assert ca_bundle({}) is None


def test_without_a_proxy_the_session_stops_reading_the_environment_but_keeps_its_bundle():
    session = configure_session(requests.Session(), NO_PROXY_ENV)
    assert session.trust_env is False
    assert session.verify == "/etc/ssl/corp.pem"
    # What a request then gets is what requests would have taken from the environment.
    settings = session.merge_environment_settings("https://geocatalog.example", {}, None, None, None)
    assert settings["verify"] == "/etc/ssl/corp.pem" and settings["proxies"] == {}


def test_with_a_proxy_the_session_is_left_to_read_the_environment():
    session = configure_session(requests.Session(), {"HTTPS_PROXY": "http://proxy:3128"})
    assert session.trust_env is True
    assert sdk_transport_options({"HTTPS_PROXY": "http://proxy:3128"}) == {}


def test_sdk_clients_get_a_transport_that_skips_the_lookup_and_verifies_with_the_bundle():
    transport = sdk_transport_options(NO_PROXY_ENV)["transport"]
    transport.open()
    try:
        assert transport.session.trust_env is False
        assert transport.connection_config.verify == "/etc/ssl/corp.pem"
    finally:
        transport.close()
    assert sdk_transport_options({"PATH": "/usr/bin"})["transport"].connection_config.verify is True


def test_sdk_clients_keep_the_storage_sdks_own_timeouts_and_read_block_size():
    from azure.storage.blob._shared import constants as blob
    from azure.storage.queue._shared import constants as queue

    config = sdk_transport_options(NO_PROXY_ENV)["transport"].connection_config
    assert (config.timeout, config.read_timeout, config.data_block_size) == (
        blob.CONNECTION_TIMEOUT, blob.READ_TIMEOUT, blob.DATA_BLOCK_SIZE)
    assert (queue.CONNECTION_TIMEOUT, queue.READ_TIMEOUT, queue.DATA_BLOCK_SIZE) == (
        blob.CONNECTION_TIMEOUT, blob.READ_TIMEOUT, blob.DATA_BLOCK_SIZE)


def test_sdk_request_logs_stay_out_of_an_info_level_worker_log_unless_someone_set_their_level(azurite, caplog):
    from azure.data.tables import TableServiceClient

    from shared.catalog.transport import SDK_REQUEST_LOGGER, quiet_sdk_request_logs

    logger = logging.getLogger(SDK_REQUEST_LOGGER)
    previous = logger.level
    try:
        logger.setLevel(logging.DEBUG)  # someone investigating: left alone
        quiet_sdk_request_logs()
        assert logger.level == logging.DEBUG
        logger.setLevel(logging.NOTSET)
        quiet_sdk_request_logs()
        caplog.set_level(logging.INFO)  # what the Functions worker forwards
        list(TableServiceClient.from_connection_string(azurite.connection_string).list_tables())
        assert not [r for r in caplog.records if r.name == SDK_REQUEST_LOGGER]
        logger.setLevel(logging.NOTSET)  # and without it, the SDK would have logged the request
        list(TableServiceClient.from_connection_string(azurite.connection_string).list_tables())
        assert [r for r in caplog.records if r.name == SDK_REQUEST_LOGGER]
    finally:
        logger.setLevel(previous)
