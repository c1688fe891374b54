"""The deployment templates, checked offline (no Azure account, no Bicep binary).

Every `.bicep` file parses with pycep (the parser checkov uses); checkov finds no failed check, and each
skip carries its reason inline; the app settings the Bicep writes hold everything `shared/settings.py`
requires, and the queues, containers and table it creates are the ones the triggers and the app read.
The trust boundary: who may write which queue, container or table (role assignments, each on its one
resource), Event Grid's dead letters, no basic-auth publishing, and what azd must pass. What watches it in
production: OpenTelemetry to Application Insights as the app's identity, the resource logs in the workspace, the
workbook and alert rules over the app's metrics, and the job-events topic.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

import function_app
from devhost.queue_host import QueueOptions, functions_of
from shared.settings import DEFAULTS, STORAGE_CONNECTION, Settings
from tests.conftest import ROOT

INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"

ROLES = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Blob Data Reader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Queue Data Message Sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Storage Table Data Reader": "76199698-9eea-4c19-bc75-cec21354c6b6",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "EventGrid Data Sender": "d5a91429-5739-47e2-a06b-3470a27159e7",
}
QUEUE_WRITERS = {"Storage Queue Data Contributor", "Storage Queue Data Message Sender"}
# The internal queue of batch and plan messages (issue 23): the template creates it and names it in WORK_QUEUE.
# shared/settings.py gets that setting with the code that moves the messages there; until then it is known here.
WORK_QUEUE = "stac-work"
# App settings that are not valid on Flex Consumption (functions-app-settings.md, "Flex Consumption plan deprecations").
NOT_ON_FLEX = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_WORKER_RUNTIME_VERSION", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD",
    "FUNCTIONS_WORKER_PROCESS_COUNT", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
}
HOST_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
                 "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"}
# The job-finished events' topic (issue 26, docs/events.md).
JOB_EVENTS_SETTING = "JOB_EVENTS_TOPIC_ENDPOINT"
# The app's OpenTelemetry metrics (issue 26) and their dimensions: the workbook and the alerts read these only.
METRICS = {
    "geocatalog_ingest.items.settled": {"collection", "outcome"},
    "geocatalog_ingest.batches.submitted": {"collection"},
    "geocatalog_ingest.catalog.calls": {"kind", "code"},
    "geocatalog_ingest.poison.messages": {"queue"},
    "geocatalog_ingest.jobs.swept": {"collection"},
    "geocatalog_ingest.operation.duration": {"collection", "outcome"},
    "geocatalog_ingest.poll.lag": {"collection"},
    "geocatalog_ingest.batch.settle_time": {"collection", "outcome"},
    "geocatalog_ingest.queue.message_age": {"queue"},
    "geocatalog_ingest.pacer.rate": {"group"},
    "geocatalog_ingest.queue.oldest_age": {"queue"},
}
METRIC_NAME = re.compile(r"geocatalog_ingest\.[a-z_.]*[a-z_]")
DIMENSION = re.compile(r"\bProperties\.(\w+)")
# What would put a key or a SAS into the templates.
SECRET_PATTERNS = re.compile(r"listKeys|listAccountSas|listServiceSas|AccountKey=|SharedAccessSignature|DefaultEndpointsProtocol"
                             r"|StorageAccountConnectionString|@secure", re.IGNORECASE)


# ----- a small evaluator for the part of Bicep the templates use ------------------------------------------------


@dataclass(frozen=True)
class Unknown:
    """A value only Azure knows at deployment (a parameter without default, a resource property, a function)."""

    expr: str


IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")
INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


@cache
def parsed(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


class BicepFile:
    """One parsed template, its parameters bound to `args` (else their defaults), its variables evaluated on demand.

    pycep gives literals and identifiers both as plain strings: a string naming a parameter or variable is that
    value, any other string is a literal. Interpolations, `a.b.c`, `union()`, `string()`, `empty()` and `c ? a : b`
    are evaluated; anything else is Unknown.
    """

    def __init__(self, path: Path, args: Mapping[str, Any] | None = None) -> None:
        self.path = path
        self.doc = parsed(path)
        self.args = dict(args or {})

    def lookup(self, name: str) -> Any:
        if name in self.args:
            return self.args[name]
        if name in self.doc.get("parameters", {}):
            default = self.doc["parameters"][name]["default"]
            return Unknown(name) if default is None else self.value(default)
        if name in self.doc.get("variables", {}):
            return self.value(self.doc["variables"][name]["value"])
        raise KeyError(name)

    def value(self, node: Any) -> Any:
        if isinstance(node, str):
            return self._string(node)
        if isinstance(node, list):
            return [self.value(item) for item in node]
        if isinstance(node, dict) and "operator" in node and node["operator"]["type"] == "property_accessor":
            return self._path(self.symbols(node))
        if isinstance(node, dict) and "function" in node and node["function"]["type"] == "union":
            merged: dict[str, Any] = {}
            for part in node["function"]["parameters"].values():
                part = self.value(part)
                if not isinstance(part, dict):
                    return Unknown("union")
                merged.update(part)
            return merged
        if isinstance(node, dict) and "operator" in node and node["operator"]["type"] == "conditional":
            operands = node["operator"]["operands"]
            condition = self.value(operands["condition"])
            if not isinstance(condition, bool):
                return Unknown("conditional")
            return self.value(operands["true_value" if condition else "false_value"])
        if isinstance(node, dict) and "function" in node and node["function"]["type"] == "empty":
            (argument,) = node["function"]["parameters"].values()
            argument = self.value(argument)
            return argument if isinstance(argument, Unknown) else len(argument) == 0
        if isinstance(node, dict) and "function" in node and node["function"]["type"] == "string":
            (argument,) = node["function"]["parameters"].values()
            argument = self.value(argument)
            return argument if isinstance(argument, Unknown) else str(argument)
        if isinstance(node, dict) and not {"operator", "function"} & node.keys():
            return {key.strip("'"): self.value(item) for key, item in node.items()}
        if isinstance(node, bool | int):
            return node
        return Unknown(json.dumps(node, default=str)[:80])

    def _string(self, text: str) -> Any:
        if IDENTIFIER.match(text):
            try:
                return self.lookup(text)
            except KeyError:
                return text
        parts = [self._path(expr.split(".")) for expr in INTERPOLATION.findall(text)]
        if any(isinstance(part, Unknown) for part in parts):
            return Unknown(text)
        values = iter(parts)
        return INTERPOLATION.sub(lambda _: str(next(values)), text)

    @staticmethod
    def symbols(node: Any) -> list[str]:
        """`a.b.c` or `a::b::c` as its names."""
        if isinstance(node, str):
            return [node]
        operands = node["operator"]["operands"]
        return BicepFile.symbols(operands["operand_1"]) + BicepFile.symbols(operands["operand_2"])

    def _path(self, names: list[str]) -> Any:
        try:
            current = self.lookup(names[0])
        except KeyError:
            return Unknown(".".join(names))  # a resource or module symbol
        for name in names[1:]:
            if not isinstance(current, dict) or name not in current:
                return Unknown(".".join(names))
            current = current[name]
        return current

    def resource(self, symbol: str) -> dict[str, Any]:
        config = self.doc["resources"][symbol]["config"]
        return config["config"] if "loop_type" in config else config

    def module(self, symbol: str) -> BicepFile:
        """The module's template, its parameters bound to what this file passes."""
        module = self.doc["modules"][symbol]
        config = module["config"]["config"] if "condition" in module["config"] else module["config"]
        args = {name: self.value(node) for name, node in config["params"].items()}
        return BicepFile(self.path.parent / module["detail"]["path"], args)


def main(args: Mapping[str, Any] | None = None) -> BicepFile:
    return BicepFile(MAIN, args)


def app_settings(args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every app setting the Function App gets, as deployed by main.bicep (with these parameter values)."""
    function = main(args).module("functionApp")
    config = function.resource("appSettingsConfig")
    assert (config["parent"], config["name"]) == ("app", "appsettings")
    assert "appSettings" not in function.resource("app")["properties"]["siteConfig"]  # one place only
    return function.value(config["properties"])


@dataclass(frozen=True)
class Assignment:
    """One role assignment of a template: who (the principal's expression), which role, on what."""

    principal: str
    principal_type: str
    role: str
    scope: tuple[str, str]  # (resource type, name) of the scope: the account, one queue, container or table
    condition: str | None  # the variable that must be true for it to exist; None = always


def role_assignments(bicep: BicepFile) -> list[Assignment]:
    """Every role assignment in `bicep`, loops expanded, each scope resolved to the resource it names."""
    role_names = {role_id: name for name, role_id in ROLES.items()}
    found = []
    for resource in bicep.doc["resources"].values():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = resource["config"]
        body = config["config"] if {"loop_type", "condition"} & config.keys() else config
        loop = config.get("loop_type")
        bindings = [{}] if loop is None else [{loop["detail"]["item_name"]: item} for item in bicep.lookup(loop["detail"]["array_name"])]
        for binding in bindings:
            scoped = BicepFile(bicep.path, {**bicep.args, **binding})
            properties = body["properties"]
            role = scoped.value(properties["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])
            (scope_symbol,) = BicepFile.symbols(body["scope"])
            target = bicep.doc["resources"][scope_symbol]
            found.append(Assignment(
                principal=".".join(BicepFile.symbols(properties["principalId"])),
                principal_type=properties["principalType"],
                role=role_names.get(role, role),
                scope=(target["type"].rsplit("/", 1)[-1], bicep.value(target["config"]["name"])),
                condition=config.get("condition"),
            ))
    return found


def granted(assignments: list[Assignment], principal: str) -> set[tuple[str, tuple[str, str]]]:
    return {(a.role, a.scope) for a in assignments if a.principal == principal}


def trigger_bindings() -> dict[str, dict[str, Any]]:
    """function name -> its trigger binding, as the Functions host indexes function_app.py."""
    return {function.get_function_name(): json.loads(function.get_function_json())["bindings"][0]
            for function in functions_of(function_app.app)}


def trigger_queues() -> dict[str, tuple[str, str]]:
    """function name -> (queue name expression, connection) of the queue-triggered functions."""
    return {name: (binding["queueName"], binding["connection"])
            for name, binding in trigger_bindings().items() if binding["type"] == "queueTrigger"}


def settings_in_bindings() -> set[str]:
    """Every app setting a binding names as `%SETTING%` (queue names, timer schedules, ...): the host must find each."""
    return {name for binding in trigger_bindings().values() for value in binding.values() if isinstance(value, str)
            for name in re.findall(r"%(\w+)%", value)}


# The settings that name a queue, container or table: the Bicep creates each, under the code's default name
# (not the local sink of job-finished events: Azure sends them to the topic, JOB_EVENTS_TOPIC_ENDPOINT).
LOCAL_ONLY_SETTINGS = {"JOB_EVENTS_QUEUE"}
RESOURCE_SETTINGS = {name for name in DEFAULTS if name.endswith(("_QUEUE", "_CONTAINER", "_TABLE"))} - LOCAL_ONLY_SETTINGS


def resolve(expression: str, settings: Mapping[str, Any]) -> str:
    """`%NAME%` expressions resolved from app settings, as the host does."""
    return re.sub(r"%(\w+)%", lambda m: settings[m.group(1)], expression)


# ----- parsing and checkov ----------------------------------------------------------------------------------------


def test_the_templates_are_all_there() -> None:
    found = {path.relative_to(INFRA).as_posix() for path in BICEP_FILES}
    assert {"main.bicep", "app/storage.bicep", "app/function.bicep", "app/monitoring.bicep", "app/rbac.bicep",
            "app/eventgrid.bicep", "app/geocatalog-role.bicep", "app/job-events.bicep", "app/diagnostics.bicep",
            "app/workbook.bicep", "app/alerts.bicep"} <= found
    modules = {module["detail"]["path"] for module in parsed(MAIN)["modules"].values()}
    assert {f"app/{path.name}" for path in BICEP_FILES if path != MAIN} == modules  # no orphan, no missing module


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda path: path.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses_and_documents_its_parameters(path: Path) -> None:
    doc = parsed(path)
    assert doc.get("resources") or doc.get("modules")
    undocumented = [name for name, param in doc.get("parameters", {}).items()
                    if not any(d["type"] == "description" and d["argument"] for d in param["decorators"])]
    assert undocumented == []


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    """One checkov run over infra/ for the whole session (`make test` builds .venv-checkov)."""
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run `make test` (it builds .venv-checkov from requirements-checkov.txt)"
    run = subprocess.run([str(CHECKOV), "--directory", str(INFRA), "--framework", "bicep", "--skip-download", "--output", "json"],
                         capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    assert run.returncode in (0, 1), run.stderr[-2000:]  # 1 = failed checks, reported below
    return json.loads(run.stdout)


def test_checkov_scans_every_template_and_finds_no_failed_check(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    assert summary["parsing_errors"] == 0, checkov_report["results"]["parsing_errors"]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in checkov_report["results"]["failed_checks"]]
    assert failed == []
    assert summary["passed"] > 0
    scanned = {c["file_path"].lstrip("/") for kind in ("passed_checks", "skipped_checks") for c in checkov_report["results"][kind]}
    assert {"app/storage.bicep", "app/function.bicep", "app/job-events.bicep"} <= scanned


def test_every_checkov_skip_is_inline_with_its_reason(checkov_report: dict[str, Any]) -> None:
    skipped = checkov_report["results"]["skipped_checks"]
    for check in skipped:
        reason = (check["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) > 20, f"{check['check_id']} on {check['resource']} is skipped without a reason"
        source = (INFRA / check["file_path"].lstrip("/")).read_text()
        assert f"checkov:skip={check['check_id']}: " in source  # written in the template, not passed on the command line


# ----- what the app needs ------------------------------------------------------------------------------------------


def test_app_settings_hold_every_setting_the_app_requires() -> None:
    settings = app_settings()
    required = {name for name, (default, _) in DEFAULTS.items() if default is None}
    in_bindings = settings_in_bindings()
    assert {"SUBMIT_QUEUE", "WORK_QUEUE", "POLL_QUEUE", "DROP_EVENTS_QUEUE"} <= in_bindings
    assert sorted(required - settings.keys()) == []
    assert sorted(in_bindings - settings.keys()) == []  # else the host cannot index that function
    assert sorted(RESOURCE_SETTINGS - settings.keys()) == []
    # The same settings pass the app's own check at start (parameters stand in for their deployed values).
    env = {name: value if isinstance(value, str) else f"<{name}>" for name, value in settings.items()}
    assert Settings.from_env(env).storage.queue_uri.startswith("https://")


def test_app_settings_are_identity_based_and_known() -> None:
    settings = app_settings()
    assert settings[f"{STORAGE_CONNECTION}__accountName"] == Unknown("storage.name")
    assert settings[f"{STORAGE_CONNECTION}__credential"] == "managedidentity"
    assert STORAGE_CONNECTION not in settings  # no connection string
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    assert "GEOCATALOG_TOKEN" not in settings  # the app uses its managed identity
    assert settings["GEOCATALOG_ENDPOINT"] == Unknown("geoCatalogEndpoint")  # a required azd parameter
    unknown_names = {name for name in settings if name not in DEFAULTS and name not in {"WORK_QUEUE"}
                     and not name.startswith(f"{STORAGE_CONNECTION}__") and name not in HOST_SETTINGS}
    assert unknown_names == set()  # a misspelt setting would silently fall back to its default
    assert NOT_ON_FLEX & settings.keys() == set()
    assert int(settings["MAX_DEQUEUE_COUNT"]) == QueueOptions.from_host_json(ROOT / "host.json").max_dequeue_count


def test_settings_tied_to_the_instance_count_follow_the_parameter() -> None:
    """A setting described as equal to the plan's maximumInstanceCount (an instance's share of the GeoCatalog's
    call limit) is written from that parameter, so the two cannot drift apart."""
    tied = {name for name, (_, description) in DEFAULTS.items() if "maximumInstanceCount" in description}
    settings = app_settings()
    count = str(main().lookup("maximumInstanceCount"))
    assert {name: settings.get(name) for name in tied} == dict.fromkeys(tied, count)  # e.g. string(maximumInstanceCount)


def test_the_queues_created_are_the_ones_the_triggers_read_and_their_poison_queues() -> None:
    settings = app_settings()
    read = {resolve(expression, settings) for expression, _ in trigger_queues().values()}
    assert {connection for _, connection in trigger_queues().values()} == {STORAGE_CONNECTION}
    storage = main().module("storage")
    # the host writes each trigger queue's -poison queue, which the sweeper drains (no trigger reads it)
    assert sorted(storage.lookup("queueNames")) == sorted(read | {f"{queue}-poison" for queue in read})
    queues = ("SUBMIT_QUEUE", "WORK_QUEUE", "POLL_QUEUE", "DROP_EVENTS_QUEUE")
    assert read == {DEFAULTS[name][0] for name in queues}  # the defaults of shared/settings.py: local runs use the same names


def test_the_containers_and_table_created_are_the_ones_the_app_uses() -> None:
    settings = app_settings()
    storage = main().module("storage")
    containers = storage.lookup("containerNames")
    assert {"PAYLOAD_CONTAINER", "DROP_CONTAINER", "STATUS_TABLE"} <= RESOURCE_SETTINGS
    assert sorted(RESOURCE_SETTINGS - settings.keys()) == []  # a new queue, container or table setting: add it to main.bicep
    assert {settings[name] for name in RESOURCE_SETTINGS if name.endswith("_CONTAINER")} <= set(containers)
    assert sorted(storage.lookup("tableNames")) == sorted(settings[name] for name in RESOURCE_SETTINGS if name.endswith("_TABLE"))
    for name in RESOURCE_SETTINGS:
        assert settings[name] == DEFAULTS[name][0]  # local runs and Azure use the same names
    deployment = main().module("functionApp").lookup("deploymentContainerName")
    assert isinstance(deployment, Unknown) and deployment in containers  # the package container exists too


def test_uploads_to_the_drop_container_reach_the_drop_events_queue() -> None:
    settings = app_settings()
    event_grid = main().module("eventGrid")
    subscription = event_grid.resource("dropCreated")["properties"]
    delivery = subscription["deliveryWithResourceIdentity"]
    assert "destination" not in subscription  # delivered only through the topic's identity
    assert delivery["identity"] == {"type": "SystemAssigned"}
    assert delivery["destination"]["endpointType"] == "StorageQueue"
    assert event_grid.value(delivery["destination"]["properties"]["queueName"]) == settings["DROP_EVENTS_QUEUE"]
    assert event_grid.value(subscription["filter"]["subjectBeginsWith"]) == f"/blobServices/default/containers/{settings['DROP_CONTAINER']}/"
    assert subscription["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert granted(role_assignments(event_grid), "topic.identity.principalId") >= {
        ("Storage Queue Data Message Sender", ("queues", settings["DROP_EVENTS_QUEUE"]))}  # that one queue only
    assert "topicSender" in event_grid.resource("dropCreated")["dependsOn"]


def test_payload_blobs_expire_after_the_retention_parameter() -> None:
    settings = app_settings()
    storage = main().module("storage")
    (rule,) = storage.resource("lifecycle")["properties"]["policy"]["rules"]
    assert rule["enabled"] is True
    assert storage.value(rule["definition"]["filters"]["prefixMatch"]) == [f"{settings['PAYLOAD_CONTAINER']}/"]
    days = rule["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"]
    assert storage.value(days) == main().lookup("payloadRetentionDays") == 30


def test_the_app_gets_an_internal_work_queue_beside_the_poll_queue() -> None:
    settings = app_settings()
    assert settings["WORK_QUEUE"] == WORK_QUEUE
    assert settings["WORK_QUEUE"] not in {settings["SUBMIT_QUEUE"], settings["POLL_QUEUE"], settings["DROP_EVENTS_QUEUE"]}
    assert {WORK_QUEUE, f"{WORK_QUEUE}-poison"} <= set(main().module("storage").lookup("queueNames"))


def test_upload_events_that_cannot_be_delivered_are_dead_lettered_as_the_topics_identity() -> None:
    settings = app_settings()
    event_grid = main().module("eventGrid")
    container = event_grid.lookup("deadLetterContainerName")
    assert container == "stac-drop-deadletter"
    assert container in main().module("storage").lookup("containerNames")  # created with the account
    subscription = event_grid.resource("dropCreated")
    dead_letter = subscription["properties"]["deadLetterWithResourceIdentity"]
    assert "deadLetterDestination" not in subscription["properties"]  # written only through the topic's identity
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    assert dead_letter["deadLetterDestination"]["endpointType"] == "StorageBlob"
    destination = dead_letter["deadLetterDestination"]["properties"]
    assert BicepFile.symbols(destination["resourceId"]) == ["storage", "id"]  # the account, as for the queue
    assert event_grid.value(destination["blobContainerName"]) == container
    # The topic may write there and nowhere else, and has that right before the subscription exists.
    assert granted(role_assignments(event_grid), "topic.identity.principalId") == {
        ("Storage Queue Data Message Sender", ("queues", settings["DROP_EVENTS_QUEUE"])),
        ("Storage Blob Data Contributor", ("containers", container)),
    }
    assert set(subscription["dependsOn"]) == {"topicSender", "topicDeadLetterWriter"}
    # 'stac-drop' is a prefix of 'stac-drop-deadletter': a dead letter must not start a job.
    prefix = event_grid.value(subscription["properties"]["filter"]["subjectBeginsWith"])
    assert f"/blobServices/default/containers/{settings['DROP_CONTAINER']}/a/b.json".startswith(prefix)
    assert not f"/blobServices/default/containers/{container}/a/b.json".startswith(prefix)


def test_the_submitter_may_only_send_to_the_inbox_and_upload_to_the_drop_container() -> None:
    settings = app_settings()
    rbac = main({"submitterPrincipalId": "<submitter>"}).module("rbac")
    assert main().lookup("submitterPrincipalId") == ""  # optional: no submitter, no assignment
    assert rbac.args["submitterPrincipalId"] == "<submitter>"
    submitter = [a for a in role_assignments(rbac) if a.principal == "submitterPrincipalId"]
    assert {(a.role, a.scope) for a in submitter} == {
        ("Storage Queue Data Message Sender", ("queues", settings["SUBMIT_QUEUE"])),  # add messages, not read or delete
        ("Storage Blob Data Contributor", ("containers", settings["DROP_CONTAINER"])),
    }
    assert {a.condition for a in submitter} == {"hasSubmitter"}
    assert parsed(rbac.path)["variables"]["hasSubmitter"]["value"] == {"operator": {"type": "not", "operands": {"bool_value": {
        "function": {"type": "empty", "parameters": {"item_to_test": "submitterPrincipalId"}}}}}}
    assert {a.principal_type for a in submitter} == {"submitterPrincipalType"}
    assert rbac.args["submitterPrincipalType"] == main().lookup("submitterPrincipalType") == "ServicePrincipal"


def test_the_operator_gets_what_the_cli_reads_and_writes_each_on_its_own_resource() -> None:
    """submit/retry send job messages to the inbox and write payload blobs; logs, failures and retry read payload
    blobs and byte ranges of uploads; jobs, status, watch, failures and item read the two tables."""
    settings = app_settings()
    rbac = main().module("rbac")
    operator = [a for a in role_assignments(rbac) if a.principal == "operatorPrincipalId"]
    assert {(a.role, a.scope) for a in operator} == {
        ("Storage Queue Data Message Sender", ("queues", settings["SUBMIT_QUEUE"])),
        ("Storage Blob Data Contributor", ("containers", settings["PAYLOAD_CONTAINER"])),
        ("Storage Blob Data Reader", ("containers", settings["DROP_CONTAINER"])),
        ("Storage Table Data Reader", ("tables", settings["STATUS_TABLE"])),
        ("Storage Table Data Reader", ("tables", settings["ITEM_INDEX_TABLE"])),
    }
    assert {a.condition for a in operator} == {"hasOperator"}
    assert {a.principal_type for a in operator} == {"operatorPrincipalType"}
    assert (rbac.args["operatorPrincipalId"], rbac.args["operatorPrincipalType"]) == (main().lookup("principalId"), main().lookup("principalType"))


def test_only_the_app_identity_writes_the_internal_queues_and_the_tables() -> None:
    settings = app_settings()
    assignments = [*role_assignments(main().module("rbac")), *role_assignments(main().module("eventGrid"))]
    assert {(role, kind) for role, (kind, _) in granted(assignments, "appPrincipalId")} >= {
        ("Storage Queue Data Contributor", "storageAccounts"), ("Storage Table Data Contributor", "storageAccounts")}
    others = [a for a in assignments if a.principal != "appPrincipalId"]
    assert [a for a in others if a.scope[0] == "storageAccounts"] == []  # nobody else holds a role on the whole account
    writable = {a.scope[1] for a in others if a.role in QUEUE_WRITERS}
    assert writable == {settings["SUBMIT_QUEUE"], settings["DROP_EVENTS_QUEUE"]}  # the inbox and Event Grid's queue
    assert not {WORK_QUEUE, settings["POLL_QUEUE"]} & writable
    assert {a.role for a in others if a.scope[0] == "tables"} == {"Storage Table Data Reader"}


def test_the_instance_count_and_the_pacing_share_follow_one_parameter() -> None:
    """`azd env set MAXIMUM_INSTANCE_COUNT N && azd provision` changes both, and nothing else can change one alone."""
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["maximumInstanceCount"] == {"value": "${MAXIMUM_INSTANCE_COUNT=2}"}
    args = {"maximumInstanceCount": 7, "extraAppSettings": {"GEOCATALOG_MAX_INSTANCES": "99", "BATCH_MAX_ITEMS": "50"}}
    settings = app_settings(args)
    assert settings["GEOCATALOG_MAX_INSTANCES"] == "7"  # extraAppSettings cannot override the tied setting
    assert settings["BATCH_MAX_ITEMS"] == "50"  # but does add the others
    function = main(args).module("functionApp")
    scale = function.resource("app")["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert function.value(scale["maximumInstanceCount"]) == 7


def test_basic_auth_publishing_is_off_on_scm_and_ftp() -> None:
    function = main().module("functionApp")
    policies = {function.value(config["name"]): config for config in
                (function.resource(symbol) for symbol, resource in function.doc["resources"].items()
                 if resource["type"] == "Microsoft.Web/sites/basicPublishingCredentialsPolicies")}
    assert {name: (config["parent"], config["properties"]) for name, config in policies.items()} == {
        "scm": ("app", {"allow": False}), "ftp": ("app", {"allow": False})}


# ----- identity only, no secrets -----------------------------------------------------------------------------------


def test_storage_allows_identities_only() -> None:
    account = main().module("storage").resource("storage")["properties"]
    assert account["allowSharedKeyAccess"] is False
    assert account["allowBlobPublicAccess"] is False
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["networkAcls"]["bypass"] == "AzureServices"  # Event Grid delivers as a trusted service


def test_the_function_app_runs_python_311_on_flex_with_its_own_identity() -> None:
    function = main().module("functionApp")
    plan = function.resource("plan")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    app = function.resource("app")
    assert app["identity"] == {"type": "SystemAssigned"}
    config = app["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["authentication"] == {"type": "SystemAssignedIdentity"}
    assert function.value(config["scaleAndConcurrency"]["maximumInstanceCount"]) == main().lookup("maximumInstanceCount")
    assert function.value(app["tags"])["azd-service-name"] == "ingest"


def test_the_app_identity_gets_its_storage_roles_and_the_geocatalog_writer_role() -> None:
    rbac = main().module("rbac")
    assigned = rbac.resource("appStorage")
    assert assigned["scope"] == "storage"
    loop = parsed(rbac.path)["resources"]["appStorage"]["config"]["loop_type"]["detail"]["array_name"]
    assert set(rbac.lookup(loop)) == {ROLES["Storage Blob Data Owner"], ROLES["Storage Queue Data Contributor"],
                                      ROLES["Storage Table Data Contributor"]}
    geocatalog = parsed(MAIN)["modules"]["geoCatalogRole"]["config"]
    assert geocatalog["condition"] == {"operator": {"type": "not", "operands": {"bool_value": {
        "function": {"type": "empty", "parameters": {"item_to_test": "geoCatalogResourceId"}}}}}}
    role = main().module("geoCatalogRole")
    assert role.args["roleDefinitionId"] == "c9c97b9c-105d-4bb5-a2a7-7d15666c2484"  # GeoCatalog Administrator
    assert role.resource("writer")["scope"] == "geoCatalog"


def test_no_key_or_sas_anywhere_in_the_templates() -> None:
    files = [*INFRA.rglob("*"), ROOT / "azure.yaml"]
    found = {path.name: SECRET_PATTERNS.findall(path.read_text()) for path in files if path.is_file()}
    assert {name: hits for name, hits in found.items() if hits} == {}


# ----- seeing it run in production ----------------------------------------------------------------------------------


def diagnostic_settings(bicep: BicepFile) -> dict[str, dict[str, Any]]:
    """resource type of the scope -> the diagnostic setting on it, for every diagnostic setting in `bicep`."""
    found = {}
    for symbol, resource in bicep.doc["resources"].items():
        if resource["type"] == "Microsoft.Insights/diagnosticSettings":
            config = bicep.resource(symbol)
            scope_type = bicep.doc["resources"][config["scope"]]["type"]
            assert scope_type not in found
            found[scope_type] = config
    return found


def workbook_items(node: Any) -> list[dict[str, Any]]:
    """Every item of a workbook, groups opened."""
    found = []
    for item in node.get("items", []):
        found.append(item)
        found.extend(workbook_items(item.get("content", {})))
    return found


def test_host_and_worker_send_opentelemetry_to_application_insights_as_the_app_identity() -> None:
    """host.json's telemetryMode makes the host export OpenTelemetry; PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY
    makes the Python worker configure the azure-monitor-opentelemetry distro itself (so the host does not forward
    the worker's logs a second time); Authorization=AAD (no ClientId) makes both sign in as the system-assigned
    identity, which is the app's only identity."""
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    settings = app_settings()
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == Unknown("appInsights.properties.ConnectionString")
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    assert main().module("functionApp").resource("app")["identity"] == {"type": "SystemAssigned"}
    assert not {"APPINSIGHTS_INSTRUMENTATIONKEY", "PYTHON_ENABLE_OPENTELEMETRY", "AZURE_CLIENT_ID"} & settings.keys()
    # The Application Insights the host writes to is the one monitoring.bicep creates.
    function = main().module("functionApp")
    assert function.args["applicationInsightsName"] == Unknown("monitoring.outputs.applicationInsightsName")
    assert function.resource("appInsights")["name"] == "applicationInsightsName"


def test_application_insights_takes_entra_id_only_and_the_app_may_publish_to_it() -> None:
    monitoring = main().module("monitoring")
    insights = monitoring.resource("appInsights")["properties"]
    assert insights["DisableLocalAuth"] is True  # no instrumentation-key ingestion
    assert BicepFile.symbols(insights["WorkspaceResourceId"]) == ["logs", "id"]  # workspace-based: AppMetrics etc.
    rbac = main().module("rbac")
    assert rbac.args["applicationInsightsName"] == Unknown("monitoring.outputs.applicationInsightsName")
    publisher = [a for a in role_assignments(rbac) if a.role == "Monitoring Metrics Publisher"]
    assert [(a.principal, a.scope[0], a.condition) for a in publisher] == [("appPrincipalId", "components", None)]


def test_job_finished_events_go_to_a_cloudevents_topic_only_the_app_may_publish_to() -> None:
    settings = app_settings()
    assert settings[JOB_EVENTS_SETTING] == Unknown("jobEvents.outputs.endpoint")
    job_events = main().module("jobEvents")
    assert main().value(parsed(job_events.path)["outputs"]["endpoint"]["value"]) == Unknown("topic.properties.endpoint")
    topic = job_events.resource("topic")
    assert parsed(job_events.path)["resources"]["topic"]["type"] == "Microsoft.EventGrid/topics"
    assert topic["properties"]["inputSchema"] == "CloudEventSchemaV1_0"
    assert topic["properties"]["disableLocalAuth"] is True  # no keys, no SAS: Entra ID callers only
    assert topic["identity"] == {"type": "SystemAssigned"}  # what a subscription delivers with (the documented example)
    # The app may publish there, and do nothing else; nobody else holds a role on the topic.
    rbac = main().module("rbac")
    assert rbac.args["jobEventsTopicName"] == Unknown("jobEvents.outputs.name")
    on_topics = [a for a in role_assignments(rbac) if a.scope[0] == "topics"]
    assert [(a.principal, a.role, a.condition) for a in on_topics] == [("appPrincipalId", "EventGrid Data Sender", None)]
    assert rbac.resource("jobEventsTopic")["name"] == "jobEventsTopicName"
    assert {role for role, (kind, _) in granted(role_assignments(rbac), "appPrincipalId") if kind == "topics"} == {
        "EventGrid Data Sender"}


def test_storage_and_event_grid_logs_go_to_the_workspace_application_insights_uses() -> None:
    diagnostics = main().module("diagnostics")
    assert diagnostics.args["workspaceName"] == Unknown("monitoring.outputs.logAnalyticsName")
    assert main().value(parsed(MAIN)["modules"]["monitoring"]["config"]["params"]["logAnalyticsName"]) == Unknown(
        "log-${resourceToken}")
    assert BicepFile.symbols(parsed(main().module("monitoring").path)["outputs"]["logAnalyticsName"]["value"]) == ["logs", "name"]
    assert diagnostics.args["storageAccountName"] == Unknown("storage.outputs.name")
    assert diagnostics.args["systemTopicName"] == Unknown("eventGrid.outputs.topicName")
    assert diagnostics.args["jobEventsTopicName"] == Unknown("jobEvents.outputs.name")
    found = diagnostic_settings(diagnostics)
    assert set(found) == {
        "Microsoft.Storage/storageAccounts/blobServices", "Microsoft.Storage/storageAccounts/queueServices",
        "Microsoft.Storage/storageAccounts/tableServices", "Microsoft.EventGrid/systemTopics", "Microsoft.EventGrid/topics"}
    for config in found.values():
        assert BicepFile.symbols(config["properties"]["workspaceId"]) == ["workspace", "id"]
    assert diagnostics.resource("workspace")["name"] == "workspaceName"
    for service in ("blobService", "queueService", "tableService"):
        assert diagnostics.resource(service)["parent"] == "storage"
    assert diagnostics.resource("storage")["name"] == "storageAccountName"
    # Writes and deletes (failures, throttling, poison-queue writes) always; reads when the parameter says so.
    for kind in ("blobServices", "queueServices", "tableServices"):
        logs = diagnostics.value(found[f"Microsoft.Storage/storageAccounts/{kind}"]["properties"]["logs"])
        assert {log["category"]: log["enabled"] for log in logs} == {"StorageWrite": True, "StorageDelete": True, "StorageRead": False}
    reads = main({"logStorageReads": True}).module("diagnostics")
    assert {log["category"]: log["enabled"] for log in reads.lookup("storageLogs")}["StorageRead"] is True
    # Every category each topic type has, into their own tables (AegDeliveryFailureLogs, ...).
    assert diagnostics.lookup("systemTopicLogCategories") == ["DeliveryFailures"]
    assert diagnostics.lookup("customTopicLogCategories") == ["DeliveryFailures", "PublishFailures", "DataPlaneRequests"]
    for kind, categories in (("systemTopics", "systemTopicLogCategories"), ("topics", "customTopicLogCategories")):
        config = found[f"Microsoft.EventGrid/{kind}"]
        assert config["properties"]["logAnalyticsDestinationType"] == "Dedicated"
        assert config["properties"]["logs"]["loop_type"]["detail"]["array_name"] == categories
        assert config["properties"]["logs"]["config"] == {"category": "category", "enabled": True}


def test_the_workbook_parses_and_charts_the_apps_metrics_only() -> None:
    module = main().module("workbook")
    assert module.args["workspaceName"] == Unknown("monitoring.outputs.logAnalyticsName")
    workbook = module.resource("workbook")
    assert parsed(module.path)["resources"]["workbook"]["type"] == "Microsoft.Insights/workbooks"
    assert BicepFile.symbols(workbook["properties"]["sourceId"]) == ["workspace", "id"]  # the queries run in the workspace
    loaded = workbook["properties"]["serializedData"]["function"]
    assert loaded["type"] == "load_text_content"
    document = json.loads((module.path.parent / loaded["parameters"]["file_path"]).read_text())
    assert document["version"] == "Notebook/1.0"
    items = workbook_items(document)
    (parameters,) = [item["content"]["parameters"] for item in items if item["type"] == 9]
    time_ranges = {parameter["name"] for parameter in parameters if parameter["type"] == 4}
    queries = {item["name"]: item["content"] for item in items if item["type"] == 3}
    assert len(queries) >= 10
    used: set[str] = set()
    for name, content in queries.items():
        query = content["query"]
        assert query.startswith("AppMetrics\n"), name  # workspace-based Application Insights: AppMetrics, not customMetrics
        assert content["resourceType"] == "microsoft.operationalinsights/workspaces", name
        assert content["timeContextFromParameter"] in time_ranges, name
        names = set(METRIC_NAME.findall(query))
        assert names and names <= METRICS.keys(), (name, names - METRICS.keys())
        dimensions = set(DIMENSION.findall(query))
        assert dimensions <= set().union(*(METRICS[metric] for metric in names)), (name, dimensions)
        used |= names
    assert used == METRICS.keys()  # every metric is on the workbook
    text = "\n".join(content["query"] for content in queries.values())
    assert "percentilew(Mean, ItemCount, 95)" in text  # duration and lag percentiles
    assert "tostring(Properties.code) == '429'" in text
    assert "by Collection\n" in queries["per-collection"]["query"]


def alert_rules(args: Mapping[str, Any] | None = None) -> tuple[BicepFile, dict[str, dict[str, Any]]]:
    alerts = main(args).module("alerts")
    return alerts, {rule["name"]: rule for rule in alerts.lookup("rules")}


def test_alert_rules_watch_poison_queues_swept_jobs_failure_rate_and_inbox_age() -> None:
    settings = app_settings()
    alerts, rules = alert_rules()
    assert alerts.args["workspaceName"] == Unknown("monitoring.outputs.logAnalyticsName")
    expected = {  # rule -> (the one metric it reads, the dimension it fires per, threshold)
        "geocatalog-ingest-poison-message": ("geocatalog_ingest.poison.messages", "Queue", 0),
        "geocatalog-ingest-job-swept": ("geocatalog_ingest.jobs.swept", "Collection", 0),
        "geocatalog-ingest-failure-rate": ("geocatalog_ingest.items.settled", "Collection", 10),
        "geocatalog-ingest-inbox-age": ("geocatalog_ingest.queue.oldest_age", "Queue", 900),
    }
    assert {name: (METRIC_NAME.findall(rule["query"]), rule["dimension"], rule["threshold"]) for name, rule in rules.items()} == {
        name: ([metric], dimension, threshold) for name, (metric, dimension, threshold) in expected.items()}
    for rule in rules.values():
        assert rule["query"].startswith("AppMetrics | where Name == ")
        assert f"{rule['measure']} = " in rule["query"] and f"{rule['dimension']} = " in rule["query"]
        assert set(DIMENSION.findall(rule["query"])) <= METRICS[METRIC_NAME.findall(rule["query"])[0]]
    assert f'Queue == "{settings["SUBMIT_QUEUE"]}"' in rules["geocatalog-ingest-inbox-age"]["query"]  # the inbox only
    assert "where Settled >= 20" in rules["geocatalog-ingest-failure-rate"]["query"]
    # One rule per entry, over the workspace, every 5 minutes, firing per dimension value.
    resource = alerts.resource("alertRules")
    assert parsed(alerts.path)["resources"]["alertRules"]["config"]["loop_type"]["detail"]["array_name"] == "rules"
    assert BicepFile.symbols(resource["properties"]["scopes"][0]) == ["workspace", "id"]
    assert resource["properties"]["evaluationFrequency"] == "PT5M"
    (criterion,) = resource["properties"]["criteria"]["allOf"]
    assert [BicepFile.symbols(criterion[key]) for key in ("query", "metricMeasureColumn", "threshold")] == [
        ["rule", "query"], ["rule", "measure"], ["rule", "threshold"]]
    assert criterion["dimensions"][0]["values"] == ["*"]


def test_every_alert_notifies_the_action_group_parameter_when_there_is_one() -> None:
    group = "/subscriptions/s/resourceGroups/ops/providers/Microsoft.Insights/actionGroups/on-call"
    alerts, _ = alert_rules({"alertActionGroupId": group})
    assert alerts.args["alertActionGroupId"] == group
    resource = alerts.resource("alertRules")
    assert resource["properties"]["actions"] == {"actionGroups": "actionGroups"}
    assert alerts.lookup("actionGroups") == [group]
    assert main().lookup("alertActionGroupId") == ""  # optional: alerts without actions
    assert main().module("alerts").lookup("actionGroups") == []
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["alertActionGroupId"] == {"value": "${ALERT_ACTION_GROUP_ID}"}


def test_alert_thresholds_are_parameters() -> None:
    _, rules = alert_rules({"alertFailureRatePercent": 25, "alertInboxOldestAgeSeconds": 3600})
    assert rules["geocatalog-ingest-failure-rate"]["threshold"] == 25
    assert rules["geocatalog-ingest-inbox-age"]["threshold"] == 3600
    assert "25%" in rules["geocatalog-ingest-failure-rate"]["description"]


# ----- azd ---------------------------------------------------------------------------------------------------------


def azure_yaml_services() -> dict[str, dict[str, str]]:
    """The `services:` block of azure.yaml (two levels of `key: value`; no YAML library in the dev set)."""
    services: dict[str, dict[str, str]] = {}
    current = None
    inside = False
    for line in (ROOT / "azure.yaml").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            inside = line.rstrip() == "services:"
            continue
        if inside and re.match(r"^  \S", line):
            current = line.strip().rstrip(":")
            services[current] = {}
        elif inside and current and ":" in line:
            key, _, value = line.strip().partition(":")
            services[current][key] = value.strip()
    return services


def test_azd_deploys_this_folder_to_the_tagged_function_app() -> None:
    assert azure_yaml_services() == {"ingest": {"project": ".", "language": "python", "host": "function"}}
    assert main().module("functionApp").args["serviceName"] == "ingest"
    assert (ROOT / ".funcignore").exists() and (ROOT / "function_app.py").exists()  # project "." is the app root


def test_azd_parameters_cover_the_required_ones_and_name_real_parameters() -> None:
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    params = parsed(MAIN)["parameters"]
    assert values.keys() <= params.keys()
    required = {name for name, param in params.items() if param["default"] is None}
    assert required == {"environmentName", "location", "geoCatalogEndpoint"}
    assert required <= values.keys()
    assert values["geoCatalogEndpoint"] == {"value": "${GEOCATALOG_ENDPOINT}"}
    assert values["geoCatalogResourceId"] == {"value": "${GEOCATALOG_RESOURCE_ID}"}
    # `${NAME=default}` (envsubst): an unset variable gives the Bicep default, never an empty number.
    for name, variable in (("maximumInstanceCount", "MAXIMUM_INSTANCE_COUNT"), ("payloadRetentionDays", "PAYLOAD_RETENTION_DAYS"),
                           ("alertFailureRatePercent", "ALERT_FAILURE_RATE_PERCENT"),
                           ("alertInboxOldestAgeSeconds", "ALERT_INBOX_OLDEST_AGE_SECONDS")):
        assert values[name] == {"value": f"${{{variable}={params[name]['default']}}}"}


def test_azd_passes_the_signed_in_principal_and_its_kind() -> None:
    """A pipeline runs azd as a service principal: a role assignment that says 'User' fails (UnmatchedPrincipalType)."""
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["principalId"] == {"value": "${AZURE_PRINCIPAL_ID}"}
    assert values["principalType"] == {"value": "${AZURE_PRINCIPAL_TYPE}"}
    assert values["submitterPrincipalId"] == {"value": "${SUBMITTER_PRINCIPAL_ID}"}
    assert values["submitterPrincipalType"] == {"value": "${SUBMITTER_PRINCIPAL_TYPE}"}
    params = parsed(MAIN)["parameters"]
    for name in ("principalType", "submitterPrincipalType"):
        (allowed,) = [d["argument"] for d in params[name]["decorators"] if d["type"] == "allowed"]
        assert sorted(allowed) == ["Group", "ServicePrincipal", "User"]
    # Only the Azure-made identities (the app's, the topic's) are typed as literals; a person's kind is a parameter.
    for module in ("rbac", "eventGrid"):
        for assignment in role_assignments(main().module(module)):
            literal = assignment.principal in ("appPrincipalId", "topic.identity.principalId")
            assert assignment.principal_type == "ServicePrincipal" if literal else assignment.principal_type.endswith("PrincipalType")


def required_azd_version() -> tuple[int, ...]:
    text = (ROOT / "azure.yaml").read_text()
    (constraint,) = re.findall(r"(?m)^requiredVersions:\n  azd: \"?>= ?([\d.]+)\"?$", text)
    return tuple(int(part) for part in constraint.split("."))


def test_azure_yaml_requires_an_azd_that_honours_funcignore_and_principal_type() -> None:
    # 1.18.0 packages function apps without what .funcignore lists (Azure/azure-dev#5383); AZURE_PRINCIPAL_TYPE
    # came in 1.17.1 (#5285). An older azd would ship tests/, infra/ and the emulator to Azure.
    assert required_azd_version() >= (1, 18, 0)
    assert (ROOT / ".funcignore").is_file()


def test_outputs_name_what_a_user_needs_next() -> None:
    outputs = parsed(MAIN)["outputs"]
    assert {"AZURE_RESOURCE_GROUP", "AZURE_FUNCTION_APP_NAME", "AZURE_STORAGE_ACCOUNT_NAME", "FUNCTION_APP_PRINCIPAL_ID",
            "APPLICATIONINSIGHTS_NAME", "SUBMIT_QUEUE", "DROP_CONTAINER", "DROP_DEAD_LETTER_CONTAINER", "STATUS_TABLE"} <= outputs.keys()
    assert main().value(outputs["DROP_DEAD_LETTER_CONTAINER"]["value"]) == main().module("eventGrid").lookup("deadLetterContainerName")
    settings = app_settings()
    for name in ("SUBMIT_QUEUE", "DROP_CONTAINER", "STATUS_TABLE"):
        assert main().value(outputs[name]["value"]) == settings[name]


def test_the_parser_tested_here_is_the_one_checkov_runs() -> None:
    """pycep in the dev requirements (these tests) and in checkov's virtualenv are the same release."""
    def pin(file: str) -> str:
        (line,) = [line for line in (ROOT / file).read_text().splitlines() if line.startswith("pycep-parser==")]
        return line
    assert pin("requirements-dev.txt") == pin("requirements-checkov.txt")
