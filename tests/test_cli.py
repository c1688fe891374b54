"""`geocatalog-ingest` through Click's CliRunner, against a running local stack (Azurite + emulator + host).

The stack puts `AzureWebJobsStorage` and the queue/table names in the environment, which is exactly
the first way the command finds its storage.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import io
import re
import subprocess
import sys
from pathlib import Path

import jsonschema_rs
import orjson
import pytest
from click.testing import CliRunner, Result

from cli import submit as submit_impl
from cli.context import CliContext, UpInfo
from cli.main import cli
from cli.watch import watch
from emulator import EmulatorOptions, Timings
from shared.errors import InvalidInputError
from shared.messages import JobRequest
from tests.conftest import ROOT
from tests.helpers import make_item, wait_until
from tests.test_pipeline_e2e import catalog, with_collection

SAMPLES = ROOT / "examples" / "landcover-items.json"


def invoke(*args: str, run_dir: Path | None = None) -> Result:
    prefix = ["--run-dir", str(run_dir)] if run_dir else []
    return CliRunner().invoke(cli, [*prefix, *args], catch_exceptions=False)


def write_json(path: Path, items: list) -> Path:
    path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": items}))
    return path


def json_of(*args: str) -> object:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def test_submit_watch_exits_0_when_every_item_succeeded(make_stack, tmp_path: Path) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    path = write_json(tmp_path / "good.json", [make_item(f"g{n}") for n in range(5)])
    result = invoke("submit", str(path), "--collection", collection, "--job-id", "good-1", "--watch")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "good-1"
    assert lines[-1].startswith("good-1 Succeeded settled 5/5 succeeded 5 failed 0 rejected 0")
    assert all("\x1b" not in line for line in lines)  # not a terminal: plain lines, no control characters
    assert set(i["id"] for i in catalog(stack).list_items(collection)) == {f"g{n}" for n in range(5)}


def test_submit_watch_exits_1_on_a_bad_item_and_a_duplicate(make_stack, tmp_path: Path) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    bad = make_item("bad")
    del bad["properties"]["datetime"], bad["properties"]["start_datetime"]
    lines = [make_item("n1"), make_item("n2"), bad, make_item("n1")]
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(i) for i in lines) + b"\n")
    result = invoke("submit", str(path), "--collection", collection, "--job-id", "mixed-1", "--watch")
    assert result.exit_code == 1, result.output
    assert "mixed-1 PartiallySucceeded settled 4/4 succeeded 2 failed 0 rejected 2" in result.stdout
    problems = json_of("failures", "mixed-1")
    assert sorted((p["item"], p["code"]) for p in problems) == [("line 3", "InvalidItem"), ("line 4", "InvalidItem")]
    assert "more than once" in next(p["message"] for p in problems if p["item"] == "line 4")

    nothing = invoke("retry", "mixed-1")  # nothing failed; the rejected lines only come back when asked
    assert nothing.exit_code == 0 and nothing.stdout == ""
    retried = invoke("retry", "mixed-1", "--include-rejected")
    assert retried.stdout.strip() == "mixed-1-retry-1"  # the two lines, read back from the uploaded file
    assert invoke("watch", "mixed-1-retry-1").exit_code == 1
    again = {(p["item"], p["state"], p["code"]) for p in json_of("failures", "mixed-1-retry-1")}
    assert again == {("bad", "Rejected", "InvalidItem"), ("n1", "Failed", "ItemAlreadyExistsInCollection")}


def test_large_inputs_are_uploaded_and_referenced_small_ones_inline(make_stack, tmp_path: Path) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    small = write_json(tmp_path / "small.json", [make_item("s1")])
    large = write_json(tmp_path / "large.json", [make_item(f"l{n:03d}", description="x" * 400) for n in range(150)])
    packed = tmp_path / "packed.ndjson.gz"
    packed.write_bytes(gzip.compress(b"\n".join(orjson.dumps(make_item(f"z{n}")) for n in range(3))))
    result = invoke("submit", str(small), str(large), str(packed), "--collection", collection, "--watch")
    assert result.exit_code == 0, result.output
    small_id, large_id, packed_id = result.stdout.splitlines()[:3]
    assert packed_id.startswith("packed-") and small_id.startswith("small-")
    assert json_of("status", small_id)["job"]["source"] == "inline"
    inbox = f"{stack.services.settings.payload_container}/inbox/"
    assert json_of("status", large_id)["job"]["source"] == f"{inbox}{large_id}/large.json"
    assert json_of("status", large_id)["job"]["items_succeeded"] == 150
    assert json_of("status", packed_id)["job"]["source"] == f"{inbox}{packed_id}/packed.ndjson[0:]"
    assert json_of("status", packed_id)["job"]["items_succeeded"] == 3
    again = invoke("submit", str(small), "--job-id", small_id)
    assert again.exit_code == 2 and "exists" in again.stderr


def test_submit_a_stac_api_search(make_stack) -> None:
    stack = make_stack(settings={"SOURCE_URL_ALLOWLIST": "127.0.0.1"},
                       emulator_options=EmulatorOptions(timings=Timings(0.05, 0.1), source_items=str(SAMPLES)))
    collection = with_collection(stack)
    result = invoke("submit", "--search", f"{stack.emulator.url}/source/search", "--param", "collections=io-lulc-annual-v02",
                    "--param", "limit=2", "--max-items", "3", "--collection", collection, "--watch")
    assert result.exit_code == 0, result.output
    job = json_of("status", result.stdout.splitlines()[0])["job"]
    assert (job["source"], job["items_succeeded"]) == (f"search {stack.emulator.url}/source/search", 3)


def test_the_messages_submit_sends_are_the_documented_ones(tmp_path: Path) -> None:
    validate = jsonschema_rs.validator_for(orjson.loads((ROOT / "schemas" / "messages.schema.json").read_bytes())).validate
    options = submit_impl.Options(collection="c-1", mode="upsert", sign="planetary-computer")
    search = submit_impl.prepare_search("https://planetarycomputer.microsoft.com/api/stac/v1/search",
                                        submit_impl.parse_params(("collections=a,b", "bbox=[1,2,3,4]", "datetime=2023", "limit=5")),
                                        10, job_id="s-1", options=options)
    assert search.body["search"]["params"] == {"collections": ["a", "b"], "bbox": [1, 2, 3, 4], "datetime": "2023", "limit": 5}
    url = submit_impl.prepare_url("https://planetarycomputer.microsoft.com/items.ndjson", job_id="u-1", options=options)
    for prepared in (search, url):
        validate(prepared.body)
        JobRequest.from_json(prepared.body)
    assert submit_impl.new_job_id("my items.v2!") .startswith("my-items-v2-")
    with pytest.raises(InvalidInputError):
        submit_impl.check_job_id("a.retry-1")


def test_watch_on_a_terminal_draws_progress_bars(make_stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    assert invoke("submit", str(write_json(tmp_path / "w.json", [make_item("w1")])), "--collection", collection,
                  "--job-id", "live-1").exit_code == 0
    assert watch(stack.services.status, ["live-1"], live=True, every=0.1) == 0
    out = capsys.readouterr().out
    assert "live-1 Succeeded" in out and "1/1 settled" in out and "ok 1" in out


def test_failures_lists_an_item_isolated_on_a_split_row(make_stack, tmp_path: Path) -> None:
    stack = make_stack(emulator_options=EmulatorOptions(timings=Timings(0.05, 0.1), atomic_batches=True))
    collection = with_collection(stack)
    existing = catalog(stack).create_items(collection, make_item("taken", collection))
    wait_until(lambda: catalog(stack).get_operation(existing).is_terminal)
    items = [make_item(f"p{n}") for n in range(5)] + [make_item("taken")] + [make_item(f"q{n}") for n in range(5)]
    result = invoke("submit", str(write_json(tmp_path / "iso.json", items)), "--collection", collection, "--job-id", "iso-1", "--watch")
    assert result.exit_code == 1, result.output
    batches = {b["batch_id"]: b for b in json_of("status", "iso-1")["batches"]}
    problems = json_of("failures", "iso-1")
    assert [(p["item"], p["code"], p["state"]) for p in problems] == [("taken", "ItemAlreadyExistsInCollection", "Failed")]
    assert batches[problems[0]["batch_id"]]["state"] == "Split"
    assert json_of("failures", "iso-1", "--code", "SomethingElse") == []
    table = invoke("failures", "iso-1")
    assert "taken" in table.stdout and "ItemAlreadyExistsInCollection" in table.stdout
    # docs/status-table.md's query finds that Split row too (the old `state eq 'Failed'` did not).
    page = (ROOT / "docs" / "status-table.md").read_text()
    query = "".join(re.search(r'table\.query_entities\(((?:"[^"]*"\s*)+)', page).group(1).split('"')[1::2])
    rows = {r["RowKey"] for r in stack.services.status.table.query_entities(query, parameters={"job": "iso-1"})}
    assert problems[0]["batch_id"] in rows and all(r.startswith(("batch-", "rejected-")) for r in rows)
    # ... and its whole snippet runs on rows as stored (a property at its default is not stored) and names the item.
    snippet = re.search(r"```python\n(.*?)```", page, re.S).group(1).replace("lulc-2023-batch-7", "iso-1")
    snippet = snippet.replace('"StacIngestStatus"', repr(stack.services.settings.status_table))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(snippet, {"conn": stack.azurite.connection_string})  # noqa: S102 - the docs' own example
    assert "'taken': 'ItemAlreadyExistsInCollection'" in printed.getvalue()


def test_item_finds_one_id_handled_by_two_jobs_in_order(make_stack, tmp_path: Path) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    path = write_json(tmp_path / "one.json", [make_item("twice"), make_item("once")])
    assert invoke("submit", str(path), "--collection", collection, "--job-id", "first", "--watch").exit_code == 0
    assert invoke("submit", str(path), "--collection", collection, "--job-id", "second", "--watch").exit_code == 1
    found = json_of("item", "twice", "--collection", collection)
    assert [(f["job_id"], f["state"], f["code"]) for f in found] == [
        ("first", "Succeeded", ""), ("second", "Failed", "ItemAlreadyExistsInCollection")]
    assert all(f["operation_id"] and f["finished"] for f in found)
    assert [f["job_id"] for f in json_of("item", "twice")] == ["first", "second"]  # no --collection: every indexed one


def test_retry_of_an_ndjson_job_whose_file_was_overwritten_says_so_and_sends_nothing(make_stack, tmp_path: Path) -> None:
    stack = make_stack()
    assert stack.emulator is not None
    collection = with_collection(stack)
    stack.emulator.catalog.faults.update({"partial_failure_fraction": 0.5, "seed": 3})
    path = tmp_path / "four.ndjson"
    path.write_bytes(b"".join(orjson.dumps(make_item(f"w{n}")) + b"\n" for n in range(4)))
    assert invoke("submit", str(path), "--collection", collection, "--job-id", "w-job", "--watch").exit_code == 1
    stack.emulator.catalog.faults.update({"partial_failure_fraction": 0.0})
    failed = {p["item"] for p in json_of("failures", "w-job")}
    assert len(failed) == 2
    source = json_of("status", "w-job")["job"]["source"].split("[", 1)[0]  # its byte-range batches read this file
    stack.services.payloads.put(source.split("/", 1)[1], b"{}\n")  # overwritten: that version's lines are gone
    result = invoke("retry", "w-job")
    assert result.exit_code == 0
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2 and all("changed since version" in line for line in skipped)
    assert "nothing to retry" in result.stderr  # and no job that would send the new version's lines


def test_retry_resubmits_only_the_failed_items_once(make_stack, tmp_path: Path) -> None:
    stack = make_stack()
    assert stack.emulator is not None
    collection = with_collection(stack)
    stack.emulator.catalog.faults.update({"partial_failure_fraction": 0.5, "seed": 3})  # then it stops
    items = [make_item(f"r{n}") for n in range(4)]
    assert invoke("submit", str(write_json(tmp_path / "b.json", items)), "--collection", collection, "--job-id", "r-job",
                  "--watch").exit_code == 1
    stack.emulator.catalog.faults.update({"partial_failure_fraction": 0.0})
    failed = {p["item"] for p in json_of("failures", "r-job", "--code", "GenericIngestionError")}
    held = {i["id"] for i in catalog(stack).list_items(collection)}
    assert len(failed) == 2 and held == {i["id"] for i in items} - failed

    first = invoke("retry", "r-job", "--code", "GenericIngestionError")
    assert first.exit_code == 0 and first.stdout.strip() == "r-job-retry-1"
    again = invoke("retry", "r-job", "--code", "GenericIngestionError")  # while it is unfinished: the same id
    assert again.stdout.strip() == "r-job-retry-1"
    assert invoke("watch", "r-job-retry-1").exit_code == 0
    retried = json_of("status", "r-job-retry-1")["job"]
    assert (retried["item_count"], retried["items_succeeded"], retried["collection"]) == (2, 2, collection)
    history = json_of("item", min(failed), "--collection", collection)  # its failure, then its retry
    assert history[0]["job_id"] == "r-job" and "Failed" in {h["state"] for h in history if h["job_id"] == "r-job"}
    assert (history[-1]["job_id"], history[-1]["state"]) == ("r-job-retry-1", "Succeeded")
    assert {i["id"] for i in catalog(stack).list_items(collection)} == {i["id"] for i in items}

    last = invoke("retry", "r-job", "--code", "GenericIngestionError")
    assert last.exit_code == 0 and last.stdout == ""
    assert "nothing to retry" in last.stderr
    assert [j["job_id"] for j in json_of("jobs") if j["job_id"].startswith("r-job-retry")] == ["r-job-retry-1"]


def test_every_read_command_prints_json_that_parses(make_stack, tmp_path: Path) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    path = write_json(tmp_path / "j.json", [make_item("j1")])
    assert invoke("submit", str(path), "--collection", collection, "--job-id", "json-1", "--watch").exit_code == 0
    listed = json_of("jobs")
    assert [j["job_id"] for j in listed] == ["json-1"] and listed[0]["state"] == "Succeeded"
    assert json_of("jobs", "--state", "Succeeded", "--since", "1h")[0]["job_id"] == "json-1"
    assert json_of("jobs", "--state", "Failed") == []
    assert json_of("status", "json-1")["batches"][0]["state"] == "Succeeded"
    logs = json_of("logs", "json-1")
    assert list(logs) == ["batch-000001"] and "Succeeded" in logs["batch-000001"]
    assert json_of("logs", "json-1", "batch-000001") == logs
    assert json_of("failures", "json-1") == []
    assert json_of("item", "j1")[0]["job_id"] == "json-1"


def test_errors_of_its_own_exit_2(make_stack, tmp_path: Path) -> None:
    make_stack()
    assert invoke("status", "no-such-job").exit_code == 2
    assert invoke("watch", "no-such-job", "--timeout", "0").exit_code == 2
    assert invoke("submit").exit_code == 2  # usage
    assert invoke("retry", "no-such-job").exit_code == 2


def test_without_any_storage_it_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    result = invoke("jobs", run_dir=tmp_path)
    assert result.exit_code == 2
    assert "geocatalog-ingest up" in result.stderr


def test_storage_is_found_by_option_then_account_name_then_the_file_up_wrote(tmp_path: Path) -> None:
    up = UpInfo({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "STATUS_TABLE": "UpTable"}, "http://127.0.0.1:1", 1)
    (tmp_path / "up.json").write_bytes(up.to_json())
    from_up = CliContext(run_dir=tmp_path, env={"STATUS_TABLE": "EnvTable"})
    assert (from_up.settings.status_table, from_up.emulator_url) == ("UpTable", "http://127.0.0.1:1")
    explicit = CliContext(connection_string="UseDevelopmentStorage=true;x=1", run_dir=tmp_path, env={"STATUS_TABLE": "EnvTable"})
    assert explicit.settings.storage is not None and explicit.settings.storage.connection_string.endswith("x=1")
    assert (explicit.settings.status_table, explicit.emulator_url) == ("EnvTable", "")  # never create collections there
    account = CliContext(account_name="acct", connection_string="", run_dir=tmp_path, env={})
    assert account.settings.storage is not None and account.settings.storage.table_uri == "https://acct.table.core.windows.net"
    assert (account.settings.status_table, account.settings.item_index_table) == ("StacIngestStatus", "StacIngestItems")


def test_a_left_over_up_file_of_a_dead_process_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    up = UpInfo({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "http://127.0.0.1:1", int(ended.stdout))
    (tmp_path / "up.json").write_bytes(up.to_json())
    result = invoke("jobs", run_dir=tmp_path)
    assert result.exit_code == 2 and "not running" in result.stderr


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_deployed_code_never_imports_the_cli_and_the_cli_stays_a_thin_client() -> None:
    deployed = [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py"))]
    assert len(deployed) > 40  # the packages under shared/ are walked too
    for path in deployed:
        assert not any(name == "cli" or name.startswith("cli.") for name in _imports(path)), path
    for path in sorted((ROOT / "cli").glob("*.py")):
        assert not any(name.startswith(("azure.data.tables", "azure.storage")) for name in _imports(path)), path
    assert "cli/" in (ROOT / ".funcignore").read_text().split()
    assert "click" not in (ROOT / "requirements.txt").read_text() and "rich" not in (ROOT / "requirements.txt").read_text()
