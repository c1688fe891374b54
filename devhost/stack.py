"""The whole local stack in one object: Azurite + GeoCatalog emulator + function_app on the local host."""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from devhost.azurite import Azurite
from devhost.blob_events import BlobCreatedWatcher
from devhost.queue_host import LocalFunctionsHost
from emulator import EmulatorOptions, EmulatorServer, Timings
from shared.services import Services, build_services, services_from_env
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# Quick timings for local runs: the app's own backoff settings, just scaled down.
LOCAL_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "GEOCATALOG_TOKEN": "local-dev-token",
    "POLL_INITIAL_DELAY_SECONDS": "1",
    "POLL_MAX_DELAY_SECONDS": "2",
    "RETRY_BASE_DELAY_SECONDS": "1",
    "SWEEP_SCHEDULE": "*/30 * * * * *",
    "GEOCATALOG_MAX_INSTANCES": "1",  # one local host: a half of the call limit for submit, the other for poll
    "SUBMIT_QUEUE": "stac-submit",
    "WORK_QUEUE": "stac-work",
    "POLL_QUEUE": "stac-poll",
    "PAYLOAD_CONTAINER": "stac-payloads",
    "STATUS_TABLE": "StacIngestStatus",
    "DROP_CONTAINER": "stac-drop",
    "DROP_EVENTS_QUEUE": "stac-drop-events",
    "SOURCE_ALLOW_LOOPBACK": "true",  # the emulator's source side is on 127.0.0.1
    "JOB_EVENTS_QUEUE": "job-events",  # the local sink of job-finished events (`geocatalog-ingest events`)
}


@dataclass
class LocalStack:
    """Start with `with LocalStack() as stack:`; `stack.services` talks to the same storage and catalog."""

    # None: no emulator; the settings' GEOCATALOG_ENDPOINT (a real GeoCatalog) is used instead.
    emulator_options: EmulatorOptions | None = field(default_factory=lambda: EmulatorOptions(timings=Timings(0.2, 0.3)))
    settings: dict[str, str] = field(default_factory=dict)  # app settings; "{emulator}" stands for its URL
    azurite: Azurite | None = None  # started (and stopped) by the stack when not given
    queue_overrides: dict[str, float] = field(default_factory=dict)  # e.g. faster visibility_timeout_seconds in tests
    timer_seconds: float | None = None  # run timer functions (the sweeper) this often instead of their schedule
    emulator: EmulatorServer | None = None
    host: LocalFunctionsHost | None = None
    watcher: BlobCreatedWatcher | None = None
    watcher_state: Path | None = None  # remember announced blob versions across restarts (BlobCreatedWatcher)
    services: Services | None = None
    _saved_env: dict[str, str] = field(default_factory=dict)
    _owns_azurite: bool = False

    def start(self) -> LocalStack:
        if self.azurite is None:
            self.azurite, self._owns_azurite = Azurite().start(), True
        if self.emulator_options is not None:
            self.emulator = EmulatorServer(self.emulator_options).start()
        url = self.emulator.url if self.emulator is not None else ""
        self._saved_env = dict(os.environ)
        settings = {**LOCAL_SETTINGS, "AzureWebJobsStorage": self.azurite.connection_string,
                    **({"GEOCATALOG_ENDPOINT": url} if url else {}), **self.settings}
        # "{emulator}" in a value is the emulator's base URL (its port is known only now).
        os.environ.update({name: value.replace("{emulator}", url) for name, value in settings.items()})
        services_from_env.cache_clear()
        self.services = build_services(Settings.from_env())
        logging.getLogger().addFilter(_quiet_auth_level_warning)
        settings = self.services.settings
        self.watcher = BlobCreatedWatcher(self.azurite.connection_string, settings.drop_container,
                                          settings.drop_events_queue, state=self.watcher_state).start()
        self.resume_functions()
        return self

    def pause_functions(self) -> None:
        """Stop the local host (as if every worker died); storage and the emulator keep running."""
        if self.host is not None:
            self.host.stop()
            self.host = None

    def resume_functions(self) -> None:
        function_app = importlib.import_module("function_app")
        self.host = LocalFunctionsHost(function_app.app, host_json=ROOT / "host.json", env=os.environ,
                                       overrides=self.queue_overrides, timer_seconds=self.timer_seconds).start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.host is not None:
            self.host.stop()
        if self.emulator is not None:
            self.emulator.stop()
        if self._owns_azurite and self.azurite is not None:
            self.azurite.stop()
        services_from_env.cache_clear()
        os.environ.clear()
        os.environ.update(self._saved_env)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _quiet_auth_level_warning(record: logging.LogRecord) -> bool:
    """azure-functions warns that HTTP auth levels do not apply to queue functions; true and irrelevant."""
    return "Auth level is not applied" not in record.getMessage()
