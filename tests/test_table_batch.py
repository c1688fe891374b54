"""Our `$batch` encoding (shared/store/table_batch.py) against Azurite: the same answers as the SDK's own, in success and failure."""

from __future__ import annotations

import orjson
import pytest
from azure.core import MatchConditions
from azure.data.tables import TableClient as SdkTableClient
from azure.data.tables import TableTransactionError, UpdateMode

from devhost.azurite import Azurite
from shared.store.table_batch import TableClient, response_parts
from tests.conftest import unique_storage_names

STALE_ETAG = "W/\"datetime'2020-01-01T00%3A00%3A00.0000000Z'\""


@pytest.fixture
def tables(azurite: Azurite) -> tuple[TableClient, SdkTableClient]:
    name = unique_storage_names()["STATUS_TABLE"]
    ours = TableClient.from_connection_string(azurite.connection_string, name)
    ours.create_table()
    return ours, SdkTableClient.from_connection_string(azurite.connection_string, name)


def test_every_operation_kind_lands_and_returns_the_etags_the_rows_now_have(tables) -> None:
    ours, sdk = tables
    sdk.create_entity({"PartitionKey": "p", "RowKey": "old", "n": 1})
    sdk.create_entity({"PartitionKey": "p", "RowKey": "gone", "n": 1})
    old = sdk.get_entity("p", "old")
    operations = [
        ("create", {"PartitionKey": "p", "RowKey": "new", "text": "a\r\n--changeset_x\r\nb", "n": 2}),
        ("update", {"PartitionKey": "p", "RowKey": "old", "n": 3},
         {"mode": UpdateMode.REPLACE, "etag": old.metadata["etag"], "match_condition": MatchConditions.IfNotModified}),
        ("upsert", {"PartitionKey": "p", "RowKey": "up", "n": 4}, {"mode": UpdateMode.MERGE}),
        ("delete", {"PartitionKey": "p", "RowKey": "gone"}),
    ]
    answers = ours.submit_transaction(operations)
    rows = {e["RowKey"]: e for e in sdk.query_entities("PartitionKey eq 'p'")}
    assert sorted(rows) == ["new", "old", "up"]
    assert rows["new"]["text"] == "a\r\n--changeset_x\r\nb"  # a boundary-like value survives the encoding
    assert (rows["old"]["n"], rows["up"]["n"]) == (3, 4)
    assert [a.get("etag") for a in answers[:3]] == [rows[k].metadata["etag"] for k in ("new", "old", "up")]
    assert len(answers) == 4


def test_a_hundred_entities_in_one_transaction(tables) -> None:
    ours, sdk = tables
    ours.submit_transaction([("upsert", {"PartitionKey": "q", "RowKey": f"r{n:03d}", "n": n}) for n in range(100)])
    assert sorted(e["n"] for e in sdk.query_entities("PartitionKey eq 'q'")) == list(range(100))


@pytest.mark.parametrize(("make_operations", "status", "code"), [
    (lambda: [("upsert", {"PartitionKey": "p", "RowKey": "other"}), ("create", {"PartitionKey": "p", "RowKey": "exists"})],
     409, "EntityAlreadyExists"),
    (lambda: [("update", {"PartitionKey": "p", "RowKey": "exists", "n": 9},
               {"etag": STALE_ETAG, "match_condition": MatchConditions.IfNotModified})], 412, "UpdateConditionNotSatisfied"),
])
def test_a_failed_operation_raises_what_the_sdk_raises_and_changes_nothing(tables, make_operations, status, code) -> None:
    ours, sdk = tables
    sdk.create_entity({"PartitionKey": "p", "RowKey": "exists", "n": 1})
    with pytest.raises(TableTransactionError) as ours_error:
        ours.submit_transaction(make_operations())
    with pytest.raises(TableTransactionError) as sdk_error:
        sdk.submit_transaction(make_operations())
    assert (ours_error.value.status_code, ours_error.value.error_code) == (status, code)
    assert (ours_error.value.status_code, ours_error.value.error_code, ours_error.value.index) == \
        (sdk_error.value.status_code, sdk_error.value.error_code, sdk_error.value.index)
    assert [e["RowKey"] for e in sdk.query_entities("PartitionKey eq 'p'")] == ["exists"]
    assert sdk.get_entity("p", "exists")["n"] == 1


def test_parts_outside_a_changeset_and_bare_newlines_are_read() -> None:
    body = (b"--batchresponse_1\nContent-Type: application/http\nContent-Transfer-Encoding: binary\n\n"
            b"HTTP/1.1 400 Bad Request\nContent-Type: application/json\n\n"
            b'{"odata.error":{"code":"InvalidInput","message":{"value":"0:bad"}}}\n--batchresponse_1--\n')
    [part] = response_parts("multipart/mixed; boundary=batchresponse_1", body)
    error = part.error("T")
    assert (part.status, error.status_code, error.error_code, error.index) == (400, 400, "InvalidInput", 0)


def _sdk_upsert_requests(table: TableClient, entities: list[dict]) -> list:
    from azure.data.tables._table_batch import TableBatchOperations  # the SDK's own builder, as the oracle

    operations = TableBatchOperations(config=table._client._config, endpoint=f"{table.scheme}://{table._primary_hostname}",  # noqa: SLF001
                                      table_name=table.table_name, is_cosmos_endpoint=False)
    for entity in entities:
        operations.add_operation(("upsert", entity, {"mode": UpdateMode.REPLACE}))
    return operations.requests


AWKWARD_ENTITIES = [
    {"PartitionKey": "a'b c é%+&=", "RowKey": "item|job|batch-000001", "text": "é\"\n\\ \u2028", "empty": "", "n": 7,
     "negative": -(2**31), "flag": False, "none": None,
     "when": __import__("datetime").datetime(2026, 1, 2, 3, 4, 5, 600007, tzinfo=__import__("datetime").UTC)},
    {"PartitionKey": "naip", "RowKey": "x'y''z", "when": __import__("datetime").datetime.fromisoformat("2026-05-06T07:08:09+02:00")},
    # every printable ASCII character but "/", "\\", "#" and "?" (not allowed in keys), each escaped as the SDK does
    {"PartitionKey": "".join(c for c in map(chr, range(32, 127)) if c not in "/\\#?"), "RowKey": "~_.-|%7C", "n": 1},
]


def test_direct_upserts_are_the_requests_the_sdk_would_send(tables) -> None:
    ours, _ = tables
    for entity in AWKWARD_ENTITIES:
        mine, [theirs] = ours._upsert_request(entity), _sdk_upsert_requests(ours, [entity])  # noqa: SLF001
        assert (mine.method, mine.url) == (theirs.method, theirs.url)
        assert orjson.loads(mine.content) == orjson.loads(theirs.content)
        for header in ("Content-Type", "x-ms-version", "DataServiceVersion", "Accept"):
            assert mine.headers[header] == theirs.headers[header]


def test_direct_upserts_land_and_replace_and_other_types_go_through_the_sdk(tables) -> None:
    ours, sdk = tables
    sdk.create_entity({"PartitionKey": "a'b c é%+&=", "RowKey": "item|job|batch-000001", "stale": "gone"})
    ours.upsert_entities([AWKWARD_ENTITIES[0]])
    stored = sdk.get_entity("a'b c é%+&=", "item|job|batch-000001")
    assert "stale" not in stored  # replaced, not merged
    assert (stored["text"], stored["n"], stored["negative"], stored["flag"]) == ("é\"\n\\ \u2028", 7, -(2**31), False)
    assert stored["when"] == AWKWARD_ENTITIES[0]["when"]
    ours.upsert_entities([{"PartitionKey": "p", "RowKey": "f", "ratio": 0.5}])  # a float: not handled directly
    assert sdk.get_entity("p", "f")["ratio"] == 0.5
