"""Where the storage account is, and the clients for it: built once per command, passed down by Click.

Lookup order (the first that is set wins):
1. `--connection-string`, or the `AzureWebJobsStorage` environment variable (names from the environment);
2. `--account-name` (DefaultAzureCredential, for a deployment; names from the environment);
3. the file `up` writes (`<run dir>/up.json`): the local stack's connection and every setting it runs with.
Queue, table and container names are the app's own settings (`shared/settings.py`), defaults included.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from shared.errors import ConfigurationError
from shared.services import Storage, connect_storage
from shared.settings import DEFAULTS, STORAGE_CONNECTION, Settings

if TYPE_CHECKING:
    from shared.retry import CatalogLookup

UP_FILE = "up.json"
NO_ENDPOINT = "https://geocatalog.invalid"  # the CLI talks to storage only; the catalog setting is not needed


@dataclass(frozen=True)
class UpInfo:
    """What a running `up` wrote: every setting its functions run with, and the emulator's URL (if any)."""

    settings: dict[str, str]
    emulator_url: str = ""
    pid: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps({"settings": self.settings, "emulator_url": self.emulator_url, "pid": self.pid},
                            option=orjson.OPT_INDENT_2)

    @property
    def is_running(self) -> bool:
        """Whether the `up` that wrote this file still runs (a SIGKILL leaves the file behind)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return self.pid > 0

    @classmethod
    def read(cls, run_dir: Path) -> UpInfo | None:
        path = run_dir / UP_FILE
        if not path.is_file():
            return None
        body = orjson.loads(path.read_bytes())
        return cls(settings=dict(body["settings"]), emulator_url=str(body.get("emulator_url") or ""), pid=int(body.get("pid", 0)))


@dataclass
class CliContext:
    """The root group's options; `storage` and `settings` connect on first use (side-effect free)."""

    connection_string: str = ""
    account_name: str = ""
    run_dir: Path = Path(".run")
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @functools.cached_property
    def up(self) -> UpInfo | None:
        return UpInfo.read(self.run_dir)

    @functools.cached_property
    def uses_up(self) -> bool:
        return not (self.connection_string or self.account_name) and self.up is not None

    @functools.cached_property
    def settings(self) -> Settings:
        return Settings.from_env(self._values())

    @functools.cached_property
    def storage(self) -> Storage:
        return connect_storage(self.settings)

    @functools.cached_property
    def catalog_lookup(self) -> CatalogLookup | None:
        """Which ids the configured GeoCatalog holds (for `retry`'s unconfirmed items); None when none is configured."""
        if self.settings.geocatalog_endpoint == NO_ENDPOINT:
            return None
        from shared.catalog import GeoCatalogClient
        from shared.retry import catalog_lookup

        return catalog_lookup(GeoCatalogClient.from_settings(self.settings).search_ids)

    @property
    def emulator_url(self) -> str:
        """The local emulator's URL when the storage is `up`'s and `up` runs the emulator; else ""."""
        return self.up.emulator_url if self.uses_up and self.up is not None else ""

    def _values(self) -> dict[str, Any]:
        if self.connection_string or self.account_name:
            values = {name: self.env[name] for name in DEFAULTS if name in self.env}
            if self.connection_string:
                values[STORAGE_CONNECTION] = self.connection_string
            else:
                values[f"{STORAGE_CONNECTION}__accountName"] = self.account_name
        elif self.up is not None:
            if not self.up.is_running:
                raise ConfigurationError(f"the local stack is not running (pid {self.up.pid} has ended; "
                                         f"{self.run_dir / UP_FILE} is left over): start it with `geocatalog-ingest up`")
            values = dict(self.up.settings)
        else:
            raise ConfigurationError(
                f"no storage account: pass --connection-string (or set {STORAGE_CONNECTION}), pass --account-name, "
                f"or start the local stack with `geocatalog-ingest up` (it writes {self.run_dir / UP_FILE})")
        values.setdefault("GEOCATALOG_ENDPOINT", NO_ENDPOINT)
        return values
