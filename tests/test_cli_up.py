"""`geocatalog-ingest up` as a real subprocess: ready line, settings file, clean stop, data kept across restarts.

Also the drop-container watcher's memory: a blob uploaded while it was down gets its event on restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient
from click.testing import CliRunner

from cli.context import CliContext, UpInfo
from cli.main import cli
from devhost.azurite import Azurite
from devhost.blob_events import BlobCreatedWatcher
from tests.conftest import ROOT, unique_storage_names
from tests.helpers import make_item, wait_until


class Up:
    """One `up` process; `ready` is its ready line."""

    def __init__(self, run_dir: Path, *options: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "AzureWebJobsStorage"}
        self.process = subprocess.Popen([sys.executable, "-m", "cli", "--run-dir", str(run_dir), "up", *options], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(90):
            self.process.kill()
            raise AssertionError("up did not get ready: " + "".join(self.lines[-30:]))
        self.ready = next(line for line in self.lines if line.startswith("ready:"))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("ready:"):
                self._ready.set()

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


def cli_json(run_dir: Path, *args: str) -> object:
    result = CliRunner().invoke(cli, ["--run-dir", str(run_dir), *args, "--json"], catch_exceptions=False, env={"AzureWebJobsStorage": ""})
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def refuses_connections(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_up_stops_cleanly_on_sigterm_and_a_restart_still_shows_earlier_jobs(run_dir: Path, tmp_path: Path) -> None:
    first = Up(run_dir)
    try:
        info = UpInfo.read(run_dir)
        assert info is not None and info.pid == first.process.pid and info.emulator_url
        blob_port = int(first.ready.split("ports ")[1].split("/")[0])
        path = tmp_path / "items.json"
        path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": [make_item("u1"), make_item("u2")]}))
        result = CliRunner().invoke(cli, ["--run-dir", str(run_dir), "submit", str(path), "--collection", "up-test",
                                          "--job-id", "before-restart", "--watch"], catch_exceptions=False, env={"AzureWebJobsStorage": ""})
        assert result.exit_code == 0, result.output  # the collection was created on the emulator first
        assert "created collection up-test in the local emulator" in result.stderr
        second_up = CliRunner().invoke(cli, ["--run-dir", str(run_dir), "up"], env={"AzureWebJobsStorage": ""})
        assert second_up.exit_code == 2 and "already runs" in second_up.stderr
    finally:
        code = first.terminate()
    assert code == 0 and first.lines[-1].strip() == "stopped"
    assert not (run_dir / "up.json").exists()
    assert refuses_connections(blob_port)  # Azurite went with it

    second = Up(run_dir)
    try:
        jobs = cli_json(run_dir, "jobs")
        assert [(j["job_id"], j["state"], j["items_succeeded"]) for j in jobs] == [("before-restart", "Succeeded", 2)]
        assert [i["job_id"] for i in cli_json(run_dir, "item", "u1")] == ["before-restart"]
    finally:
        assert second.terminate() == 0


def test_up_against_a_real_endpoint_runs_no_emulator_and_never_creates_collections(run_dir: Path) -> None:
    up = Up(run_dir, "--endpoint", "https://geocatalog.invalid")  # nothing is sent there: no job is submitted
    try:
        assert "GeoCatalog https://geocatalog.invalid" in up.ready
        info = UpInfo.read(run_dir)
        assert info is not None and info.emulator_url == ""
        assert (info.settings["GEOCATALOG_ENDPOINT"], info.settings["GEOCATALOG_TOKEN"]) == ("https://geocatalog.invalid", "")
        assert CliContext(run_dir=run_dir, env={}).emulator_url == ""  # so `submit` creates no collection
        assert cli_json(run_dir, "jobs") == []
    finally:
        assert up.terminate() == 0


def test_the_watcher_announces_blobs_uploaded_while_it_was_down(azurite: Azurite, tmp_path: Path) -> None:
    names = unique_storage_names()
    container = ContainerClient.from_connection_string(azurite.connection_string, names["DROP_CONTAINER"])
    events = QueueClient.from_connection_string(azurite.connection_string, names["DROP_EVENTS_QUEUE"])
    state = tmp_path / "drop-events.json"

    def watcher() -> BlobCreatedWatcher:
        return BlobCreatedWatcher(azurite.connection_string, names["DROP_CONTAINER"], names["DROP_EVENTS_QUEUE"],
                                  every=0.05, state=state).start()

    def announced() -> list[str]:
        return [orjson.loads(m.content)["subject"].rsplit("/", 1)[1] for m in events.receive_messages(max_messages=32)]

    first = watcher()
    container.upload_blob("c1/while-up.json", b"{}")
    assert wait_until(announced) == ["while-up.json"]
    first.stop()
    container.upload_blob("c1/while-down.json", b"{}")
    second = watcher()
    try:
        assert wait_until(announced) == ["while-down.json"]  # and not while-up.json again
    finally:
        second.stop()
