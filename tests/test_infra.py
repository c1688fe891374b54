"""The deployment templates, checked offline (no Azure account, no Bicep binary).

Every `.bicep` file parses with pycep (the parser checkov uses); checkov finds no failed check, and each
skip carries its reason inline; the app settings the Bicep writes hold everything `shared/settings.py`
requires, and the queues, containers and table it creates are the ones the triggers and the app read.
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
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Storage Queue Data Message Sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
}
# App settings that are not valid on Flex Consumption (functions-app-settings.md, "Flex Consumption plan deprecations").
NOT_ON_FLEX = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_WORKER_RUNTIME_VERSION", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD",
    "FUNCTIONS_WORKER_PROCESS_COUNT", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
}
HOST_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
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
    value, any other string is a literal. Interpolations, `a.b.c`, `union()` and `string()` are evaluated; anything
    else is Unknown.
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


def main() -> BicepFile:
    return BicepFile(MAIN)


def app_settings() -> dict[str, Any]:
    """Every app setting the Function App gets, as deployed by main.bicep."""
    function = main().module("functionApp")
    config = function.resource("appSettingsConfig")
    assert (config["parent"], config["name"]) == ("app", "appsettings")
    assert "appSettings" not in function.resource("app")["properties"]["siteConfig"]  # one place only
    return function.value(config["properties"])


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


# The settings that name a queue, container or table: the Bicep creates each, under the code's default name.
RESOURCE_SETTINGS = {name for name in DEFAULTS if name.endswith(("_QUEUE", "_CONTAINER", "_TABLE"))}


def resolve(expression: str, settings: Mapping[str, Any]) -> str:
    """`%NAME%` expressions resolved from app settings, as the host does."""
    return re.sub(r"%(\w+)%", lambda m: settings[m.group(1)], expression)


# ----- parsing and checkov ----------------------------------------------------------------------------------------


def test_the_templates_are_all_there() -> None:
    found = {path.relative_to(INFRA).as_posix() for path in BICEP_FILES}
    assert {"main.bicep", "app/storage.bicep", "app/function.bicep", "app/monitoring.bicep", "app/rbac.bicep",
            "app/eventgrid.bicep", "app/geocatalog-role.bicep"} <= found
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
    assert {"app/storage.bicep", "app/function.bicep"} <= scanned


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
    unknown_names = {name for name in settings
                     if name not in DEFAULTS and not name.startswith(f"{STORAGE_CONNECTION}__") and name not in HOST_SETTINGS}
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


def test_the_queues_created_are_the_ones_the_triggers_read() -> None:
    settings = app_settings()
    read = {resolve(expression, settings) for expression, _ in trigger_queues().values()}
    assert {connection for _, connection in trigger_queues().values()} == {STORAGE_CONNECTION}
    storage = main().module("storage")
    assert sorted(storage.lookup("queueNames")) == sorted(read)
    queues = ("SUBMIT_QUEUE", "WORK_QUEUE", "POLL_QUEUE", "DROP_EVENTS_QUEUE")
    assert read == {f"{DEFAULTS[name][0]}{suffix}" for name in queues
                    for suffix in ("", "-poison")}  # the defaults of shared/settings.py: local runs use the same names


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
    sender = event_grid.resource("topicSender")
    assert BicepFile.symbols(sender["scope"]) == ["storage", "queueService", "dropEvents"]  # that one queue only
    assert event_grid.value(sender["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]) == \
        ROLES["Storage Queue Data Message Sender"]
    assert event_grid.value(event_grid.resource("storage__queueService__dropEvents")["name"]) == settings["DROP_EVENTS_QUEUE"]


def test_payload_blobs_expire_after_the_retention_parameter() -> None:
    settings = app_settings()
    storage = main().module("storage")
    (rule,) = storage.resource("lifecycle")["properties"]["policy"]["rules"]
    assert rule["enabled"] is True
    assert storage.value(rule["definition"]["filters"]["prefixMatch"]) == [f"{settings['PAYLOAD_CONTAINER']}/"]
    days = rule["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"]
    assert storage.value(days) == main().lookup("payloadRetentionDays") == 30


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
    for name, variable in (("maximumInstanceCount", "MAXIMUM_INSTANCE_COUNT"), ("payloadRetentionDays", "PAYLOAD_RETENTION_DAYS")):
        assert values[name] == {"value": f"${{{variable}={params[name]['default']}}}"}


def test_outputs_name_what_a_user_needs_next() -> None:
    outputs = parsed(MAIN)["outputs"]
    assert {"AZURE_RESOURCE_GROUP", "AZURE_FUNCTION_APP_NAME", "AZURE_STORAGE_ACCOUNT_NAME", "FUNCTION_APP_PRINCIPAL_ID",
            "APPLICATIONINSIGHTS_NAME", "SUBMIT_QUEUE", "DROP_CONTAINER", "STATUS_TABLE"} <= outputs.keys()
    settings = app_settings()
    for name in ("SUBMIT_QUEUE", "DROP_CONTAINER", "STATUS_TABLE"):
        assert main().value(outputs[name]["value"]) == settings[name]


def test_the_parser_tested_here_is_the_one_checkov_runs() -> None:
    """pycep in the dev requirements (these tests) and in checkov's virtualenv are the same release."""
    def pin(file: str) -> str:
        (line,) = [line for line in (ROOT / file).read_text().splitlines() if line.startswith("pycep-parser==")]
        return line
    assert pin("requirements-dev.txt") == pin("requirements-checkov.txt")
