"""The trust boundary (issue 23): drop events, signing, redaction, the CLI's output and over-long ids,
each through what an attacker can actually write: a drop event, a queue message, an item, an upload.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from azure.storage.blob import BlobServiceClient
from click.testing import CliRunner

from cli.main import cli
from devhost.jobs import wait_for_jobs
from devhost.stack import LocalStack
from emulator import EmulatorOptions, Faults, Timings
from shared.errors import InvalidInputError
from shared.inputs.blob_events import blob_created_event
from shared.inputs.egress import EgressPolicy, GuardedSession
from shared.inputs.signing import SasTokenSigner
from shared.redact import redacted
from shared.services import Services
from shared.settings import Settings, StorageAccess
from shared.steps.handlers import handle_blob_event, handle_submit_message
from shared.store.payloads import PayloadStore
from shared.store.status import JobRow, JobState
from tests.helpers import make_item, wait_until
from tests.test_pipeline_e2e import batch_rows, run, stored, with_collection
from tests.test_quickstart_e2e import quickstart_stack

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/{}"


def recording(stack: LocalStack) -> tuple[Services, list[str]]:
    """The stack's services with a blob client that records the URL of every request it sends."""
    urls: list[str] = []
    client = BlobServiceClient.from_connection_string(stack.azurite.connection_string,
                                                      raw_request_hook=lambda request: urls.append(request.http_request.url))
    payloads = PayloadStore(client, stack.services.settings.payload_container)
    return dataclasses.replace(stack.services, payloads=payloads), urls


def drop_event(stack: LocalStack, subject_path: str, *, etag: str = "0x8DC0FFEE", account: str = "devstoreaccount1") -> dict:
    event = blob_created_event(stack.services.settings.drop_container, "x", etag, None, account=account)  # type: ignore[arg-type]
    event["subject"] = f"/blobServices/default/containers/{stack.services.settings.drop_container}/blobs/{subject_path}"
    return event


def only_job(services: Services) -> JobRow:
    jobs = services.status.jobs()
    assert len(jobs) == 1, jobs
    return jobs[0]


# ----- drop events --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["%2E%2E/azure-webjobs-secrets/app/host.json", "../azure-webjobs-secrets/app/host.json",
                                  "a/%2e/b.ndjson", "a//b.ndjson", "a%5C..%5Cb.ndjson", "a/%0Ab.ndjson"])
def test_a_drop_event_that_leaves_the_container_is_rejected_with_no_request(make_stack, path: str) -> None:
    stack = make_stack()
    stack.pause_functions()
    services, urls = recording(stack)
    handle_blob_event(orjson.dumps(drop_event(stack, path)), dequeue_count=1, services=services, now=NOW)
    assert urls == []  # not even a HEAD: nothing of the blob (or of any other container) was asked for
    job = only_job(services)
    assert job.state == JobState.REJECTED and "not a plain blob name" in job.error_message
    assert job.source.startswith(repr(f"{services.settings.drop_container}/")[:-1]) and job.source in job.error_message


def test_the_escaping_event_ends_rejected_through_the_queue_too(make_stack) -> None:
    stack = make_stack()
    event = drop_event(stack, "%2E%2E/azure-webjobs-secrets/app/host.json")
    stack.services.queues.send(stack.services.settings.drop_events_queue, orjson.dumps(event).decode())
    wait_until(lambda: len(stack.services.status.jobs()) == 1, timeout=30)
    job = only_job(stack.services)
    assert job.state == JobState.REJECTED and "../azure-webjobs-secrets/app/host.json" in job.error_message


def test_an_event_of_another_storage_account_is_dropped(make_stack) -> None:
    stack = make_stack()
    stack.pause_functions()
    collection = with_collection(stack)
    path = f"{collection}/real.ndjson"
    stack.services.payloads._service.get_blob_client(stack.services.settings.drop_container, path).upload_blob(  # noqa: SLF001
        orjson.dumps(make_item("f1")))
    services, urls = recording(stack)
    for event in (drop_event(stack, path, account="attackeraccount"), {**drop_event(stack, path), "topic": "/not/a/topic"},
                  {key: value for key, value in drop_event(stack, path).items() if key != "topic"}):
        handle_blob_event(orjson.dumps(event), dequeue_count=1, services=services, now=NOW)
    assert urls == [] and services.status.jobs() == []


def test_a_bad_etag_is_refused_before_it_reaches_if_match(make_stack) -> None:
    stack = make_stack()
    stack.pause_functions()
    collection = with_collection(stack)
    services, urls = recording(stack)
    handle_blob_event(orjson.dumps(drop_event(stack, f"{collection}/x.ndjson", etag='a",*,"b')), dequeue_count=1,
                      services=services, now=NOW)
    assert urls == []
    job = only_job(services)
    assert job.state == JobState.REJECTED and "not a storage ETag" in job.error_message and "x.ndjson" in job.source


def test_uploads_still_work_with_the_checked_events(make_stack) -> None:
    """The local watcher's events (Azurite's quoted ETags, its account in the topic) pass the checks."""
    stack = make_stack()
    collection = with_collection(stack)
    container = stack.services.settings.drop_container
    stack.services.payloads._service.get_blob_client(container, f"{collection}/ok.ndjson").upload_blob(  # noqa: SLF001
        orjson.dumps(make_item("ok-1")) + b"\n")
    wait_until(lambda: len(stack.services.status.jobs()) == 1, timeout=30)
    job_id = only_job(stack.services).job_id
    assert wait_for_jobs(stack.services, [job_id], timeout=60)[job_id].state == JobState.SUCCEEDED


def test_the_app_knows_its_storage_account() -> None:
    assert StorageAccess("DefaultEndpointsProtocol=https;AccountName=MyData;AccountKey=a2V5").account_name == "mydata"
    assert StorageAccess("UseDevelopmentStorage=true").account_name == "devstoreaccount1"
    assert StorageAccess(blob_uri="https://prod1.blob.core.windows.net", queue_uri="q", table_uri="t").account_name == "prod1"
    assert StorageAccess.from_env({"AzureWebJobsStorage__accountName": "prod2"}, "AzureWebJobsStorage").account_name == "prod2"
    assert StorageAccess(blob_uri="http://127.0.0.1:10000/devstoreaccount1").account_name == "devstoreaccount1"


# ----- signing ------------------------------------------------------------------------------------------------


def signer_for(stack: LocalStack) -> SasTokenSigner:
    policy = EgressPolicy(frozenset({"127.0.0.1"}), allow_loopback=True, timeout=10)
    return SasTokenSigner(f"{stack.emulator.url}/source/sas", GuardedSession(policy))


def test_a_token_goes_only_to_the_account_and_container_it_was_issued_for(make_stack) -> None:
    stack = quickstart_stack(make_stack)
    item = make_item("s1", assets={
        "data": {"href": "https://ai4edataeuwest.blob.core.windows.net/io-lulc/a.tif"},
        "other": {"href": "https://ai4edataeuwest.blob.core.windows.net/other-container/b.tif"},
        "evil": {"href": "https://attacker.blob.core.windows.net/io-lulc/c.tif"},
        "lookalike": {"href": "https://ai4edataeuwest.blob.core.windows.net.evil.example/io-lulc/d.tif"},
        "plain": {"href": "https://example.com/io-lulc/e.tif"}})
    assets = signer_for(stack).sign([item])[0]["assets"]
    tokens = {key: asset["href"].partition("?")[2] for key, asset in assets.items()}
    assert tokens["data"] and tokens["other"] and tokens["evil"]
    assert len({tokens["data"], tokens["other"], tokens["evil"]}) == 3  # one token per account and container
    assert tokens["lookalike"] == tokens["plain"] == ""
    routes = stack.emulator.app.stats.by_route
    assert routes["GET /source/sas/token/{account}/{container}"] == 3


@pytest.mark.parametrize("href", ["https://evil.example\\.blob.core.windows.net/io-lulc/a.tif",
                                  "https://ai4edataeuwest.blob.core.windows.net@evil.example/io-lulc/a.tif",
                                  "https://ai4edataeuwest.blob.core.windows.net/io-lulc/a\x00.tif"])
def test_an_href_that_hosts_disagree_about_is_refused(make_stack, href: str) -> None:
    stack = quickstart_stack(make_stack)
    with pytest.raises(InvalidInputError, match="neither signed nor sent"):
        signer_for(stack).sign([make_item("s2", assets={"data": {"href": href}})])
    assert not any("sas/token" in route for route in stack.emulator.app.stats.by_route)


def test_an_item_with_a_refused_href_is_rejected_alone_and_the_others_go(make_stack) -> None:
    stack = quickstart_stack(make_stack)
    with_collection(stack, "landcover-demo")
    bad = make_item("bad-href", assets={"data": {"href": "https://evil.example\\.blob.core.windows.net/io-lulc/a.tif"}})
    good = make_item("good-href")
    job = run(stack, {"v": 1, "job_id": "sig-1", "collection": "landcover-demo", "sign": "planetary-computer",
                      "sign_collection": "io-lulc-annual-v02", "items": [bad, good]}, "sig-1")
    assert (job.state, job.items_rejected, job.items_succeeded) == (JobState.PARTIALLY_SUCCEEDED, 1, 1)
    reasons = {key: reason for row in batch_rows(stack, "sig-1").values() if row.rejected_items
               for key, reason in orjson.loads(row.rejected_items).items()}
    assert list(reasons) == ["bad-href"] and reasons["bad-href"].startswith("asset 'data': the href has '\\\\' at position 21")
    assert set(stored(stack, "landcover-demo")) == {"good-href"}


# ----- redaction ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "secret"), [
    ("GET HTTPS://acct.blob.core.windows.net/c/x.tif?sv=2024&sig=SeCrEt1 failed", "SeCrEt1"),
    ("copy failed for sv=2024-05-04&se=2026&sr=c&sig=SeCrEt2%3D and more", "SeCrEt2"),
    ("Sig=SeCrEt3", "SeCrEt3"),
    ('{"x": "href \\"https://a.example/p?SIG=SeCrEt4\\""}', "SeCrEt4"),
    ("Authorization: Bearer SeCrEt5.part", "SeCrEt5"),
    ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=SeCrEt6==;", "SeCrEt6"),
])
def test_redaction(text: str, secret: str) -> None:
    assert secret not in redacted(text)


def test_every_row_write_is_redacted_and_bounded(make_stack) -> None:
    stack = make_stack()
    status = stack.services.status
    status.create_job(JobRow(job_id="r-1", source="https://h.example/x?sig=S1"), NOW)
    message = "service said: HTTPS://acct.blob.core.windows.net/c/a.tif?sv=1&sig=S2 and sv=1&sig=S3 " + "y" * 40_000
    status.update_job("r-1", lambda row: dataclasses.replace(row, state=JobState.FAILED, error_message=message), NOW)
    entity = status.table.get_entity("r-1", "job")
    stored_text = str(dict(entity))
    assert not any(secret in stored_text for secret in ("S1", "S2", "S3"))
    assert len(entity["error_message"]) <= 8_000 and entity["error_message"].endswith("[truncated]")


def test_a_catalog_error_that_echoes_a_token_is_stored_without_it(make_stack) -> None:
    """The service's failure text may echo a signed href (here in the operation's error code, with an
    upper-case scheme and a bare query string, which the old pattern missed): no row keeps it."""
    echo = "Forbidden HTTPS://Acct.Blob.Core.Windows.Net/c/a.tif?sv=1&sig=OpSecret1 (sv=1&sig=OpSecret2)"
    stack = make_stack(emulator_options=EmulatorOptions(timings=Timings(0.05, 0.1), faults=Faults(fail_operations_code=echo)))
    collection = with_collection(stack)
    job = run(stack, {"v": 1, "job_id": "red-1", "collection": collection, "items": [make_item("e1")]}, "red-1")
    assert job.state == JobState.FAILED
    rows = [str(dict(entity)) for entity in stack.services.status.table.query_entities("PartitionKey eq 'red-1'")]
    assert any("Forbidden HTTPS://Acct.Blob.Core.Windows.Net/c/a.tif" in row for row in rows)  # the text is kept...
    assert not any("OpSecret" in row for row in rows)  # ...without the signatures


# ----- the CLI ------------------------------------------------------------------------------------------------


HOSTILE = "x/[/] [bold red]loud[/] \x1b[31mred\x1b[0m \x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\ \x07"


def test_jobs_and_job_print_row_text_literally(make_stack) -> None:
    stack = make_stack()
    status = stack.services.status
    status.create_job(JobRow(job_id="cli-1", source=HOSTILE), NOW)
    status.update_job("cli-1", lambda row: dataclasses.replace(row, state=JobState.REJECTED, error_code="X[/]",
                                                               error_message=HOSTILE), NOW)
    for args in (["jobs"], ["status", "cli-1"]):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "x/[/]" in out and "[bold red]loud[/]" in out  # markup shown as written, not applied
        assert "\x1b" not in out and "\x07" not in out  # no escape reaches the terminal...
        assert "\\x1b]8;;https://evil.example" in out  # ...it is shown instead


def test_an_upload_named_like_markup_is_listed(make_stack) -> None:
    stack = make_stack()
    container = stack.services.settings.drop_container
    stack.services.payloads._service.get_blob_client(container, "x/[/].csv").upload_blob(b"a,b\n")  # noqa: SLF001
    wait_until(lambda: len(stack.services.status.jobs()) == 1, timeout=30)
    result = CliRunner().invoke(cli, ["jobs"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "x/[/].csv" in result.stdout


# ----- over-long ids ------------------------------------------------------------------------------------------


LONG = "a" * 40_000


def long_item() -> dict:
    return make_item(LONG, assets={"data": {"href": "https://example.blob.core.windows.net/lulc/long.tif"}})


def test_a_40000_character_item_id_is_rejected_with_a_short_reason(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    job = run(stack, {"v": 1, "job_id": "long-item", "collection": collection, "items": [long_item(), make_item("fine")]},
              "long-item")
    assert (job.state, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 1, 1)
    reasons = {k: v for row in batch_rows(stack, "long-item").values() for k, v in orjson.loads(row.rejected_items or "{}").items()}
    assert list(reasons) == ["#0"] and "40000 characters long" in reasons["#0"] and len(reasons["#0"]) < 300


def test_a_40000_character_id_in_an_upload_is_rejected(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    container = stack.services.settings.drop_container
    document = {"type": "FeatureCollection", "features": [long_item(), make_item("fine-2")]}
    stack.services.payloads._service.get_blob_client(container, f"{collection}/long.json").upload_blob(orjson.dumps(document))  # noqa: SLF001
    wait_until(lambda: len(stack.services.status.jobs()) == 1, timeout=30)
    job_id = only_job(stack.services).job_id
    job = wait_for_jobs(stack.services, [job_id], timeout=60)[job_id]
    assert (job.state, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 1, 1)


@pytest.mark.parametrize("body", [
    {"v": 1, "job_id": LONG, "collection": "c-long", "items": []},
    {"v": 1, "collection": LONG, "items": [{"id": "x"}]},
    {"v": 1, "collection": "c-long", "delete": {"ids": [LONG]}},
    {"v": 1, "kind": "batch", "job_id": "j", "batch_id": LONG},
    {"v": 1, "kind": "batch", "job_id": LONG, "batch_id": "b"},
    {"v": 1, "kind": "plan", "job_id": LONG, "blob": "stac-drop/x.ndjson", "etag": "0x1", "collection": "c-long"},
])
def test_a_40000_character_id_in_a_message_never_fails_the_handler(make_stack, body: dict) -> None:
    """Each is handled on its first delivery (no exception, so no redelivery loop), and what it leaves
    in the table is short."""
    stack = make_stack()
    stack.pause_functions()
    handle_submit_message(orjson.dumps(body), message_id="m-long", dequeue_count=1, services=stack.services, now=NOW)
    for row in stack.services.status.jobs():
        assert len(row.job_id) <= 64 and len(row.error_message) <= 8_000 and LONG not in row.source


# ----- no secret in repr --------------------------------------------------------------------------------------


def test_settings_and_storage_access_hide_their_secrets_in_repr(tmp_path: Path) -> None:
    env = {"GEOCATALOG_ENDPOINT": "https://gc.example", "GEOCATALOG_TOKEN": "TokenSecret",
           "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=KeySecret=="}
    settings = Settings.from_env(env)
    assert settings.geocatalog_token == "TokenSecret" and "KeySecret" in settings.storage.connection_string
    for shown in (repr(settings), str(settings), repr(settings.storage)):
        assert "TokenSecret" not in shown and "KeySecret" not in shown
