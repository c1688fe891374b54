"""The deployed package stands alone.

The package is built as `func azure functionapp publish` (and `azd deploy`) build it: every file of the app
folder that `.funcignore` does not exclude, zipped. It is unpacked into a fresh folder and run with a Python
that has `requirements.txt` installed and nothing else: `function_app` must import there, index the same queue
triggers the host will, validate a real STAC item, and never reach dev-only code (emulator, devhost, tools,
bench, tests, cli) or a package that only the dev requirements install.

`requirements.txt` is the lock the remote build installs (`pip install -r requirements.txt`, which checks hashes as
soon as any line has one): every package pinned and hashed, compiled by `make lock` from `requirements.in`, the
direct dependencies. It is installed here with `--require-hashes`, and checked against `requirements.in`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pathspec
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import function_app
from devhost.queue_host import functions_of
from tests.conftest import ROOT
from tests.corpus import corpus_file

DEV_ONLY = {"emulator", "devhost", "tools", "bench", "tests", "cli"}
NEVER_DEPLOYED = [
    *(f"{name}/" for name in sorted(DEV_ONLY)), "infra/", "azure.yaml", "examples/", "schemas/", ".venv/", ".venv-checkov/",
    ".run/", ".azure/", "node_modules/", "local.settings.json", "local.settings.example.json", "requirements-dev.txt",
    "requirements-checkov.txt", "Makefile", "pyproject.toml", ".git", ".ci/",
]
LOCK = ROOT / "requirements.txt"
DIRECT = ROOT / "requirements.in"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)(?P<rest>.*)$")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
MAX_PACKAGE_BYTES = 5 * 1024 * 1024  # the app's sources are ~200 KB; anything near this is a leaked folder
RUNTIME_VENVS = ROOT / ".run"

# Runs inside the fresh virtualenv with -I (no PYTHONPATH, no user site, no current folder on sys.path).
PROBE = r"""
import ast, importlib.util, json, sys
from pathlib import Path

app_root, item_file, dev_only = Path(sys.argv[1]), Path(sys.argv[2]), set(sys.argv[3].split(","))
sys.path.insert(0, str(app_root))  # what the Python worker does with the app folder
report = {"unresolved": {}, "dev_only": {}, "import_error": None, "functions": {}, "item_problem": "not run", "outside": []}

# Every import in every module of the package, also the ones inside functions that only run later.
for path in sorted(app_root.rglob("*.py")):
    where = path.relative_to(app_root).as_posix()
    for node in ast.walk(ast.parse(path.read_text(), filename=where)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
        for name in names:
            if name.split(".")[0] in dev_only:
                report["dev_only"].setdefault(where, []).append(name)
                continue
            try:
                found = importlib.util.find_spec(name) is not None
            except ImportError:
                found = False
            except ValueError:  # already imported by an earlier find_spec, without a __spec__
                found = name in sys.modules
            if not found:
                report["unresolved"].setdefault(where, []).append(name)

try:
    import function_app
    for function in function_app.app.get_functions():
        report["functions"][function.get_function_name()] = json.loads(function.get_function_json())["bindings"]
    from shared.items import item_problem, items_from_document
    (item,) = items_from_document(json.loads(item_file.read_text()))
    report["item_problem"] = item_problem(item, item["collection"])
except Exception as error:
    report["import_error"] = f"{type(error).__name__}: {error}"

for name, module in sorted(sys.modules.items()):
    origin = getattr(module, "__file__", None)
    if origin and not any(origin.startswith(root) for root in (str(app_root), sys.prefix, sys.base_prefix)):
        report["outside"].append(f"{name}: {origin}")
print(json.dumps(report))
"""


def package_files(root: Path) -> list[str]:
    """The app folder's files that `.funcignore` does not exclude (gitignore rules), as relative paths."""
    spec = pathspec.GitIgnoreSpec.from_lines((root / ".funcignore").read_text().splitlines())
    kept = []
    for folder, dirs, files in os.walk(root):
        relative = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not spec.match_file(f"{(relative / d).as_posix()}/"))
        kept += [(relative / name).as_posix() for name in sorted(files) if not spec.match_file((relative / name).as_posix())]
    return kept


def build_package(root: Path, archive: Path) -> Path:
    """Zip what would be published, then unpack it into a fresh app folder (as the host's wwwroot)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as package:
        for name in package_files(root):
            package.write(root / name, name)
    app_root = archive.with_suffix("")
    with zipfile.ZipFile(archive) as package:
        package.extractall(app_root)
    return app_root


def requirement_lines(path: Path) -> list[str]:
    """The requirements of a pip requirements file, one per line (continuations joined, comments dropped)."""
    text = path.read_text().replace("\\\n", " ")
    return [line.split(" #", 1)[0].strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line; any other kind of line fails."""
    found = {}
    for line in requirement_lines(path):
        match = PIN.match(line)
        assert match, f"{path.name}: not an exact pin: {line[:120]}"
        found[canonicalize_name(match["name"])] = match["version"]
    return found


def runtime_python() -> Path:
    """A virtualenv with requirements.txt alone, kept under .run/ and rebuilt when requirements.txt or Python change.

    Installed as the remote build does, plus `--require-hashes`: a package without a pin or a hash, a dependency
    missing from the lock, or a file whose hash differs fails the install.
    """
    key = hashlib.sha256(LOCK.read_bytes() + sys.version.encode()).hexdigest()[:12]
    venv = RUNTIME_VENVS / f"deploy-venv-{key}"
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    for stale in RUNTIME_VENVS.glob("deploy-venv-*"):
        shutil.rmtree(stale, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--require-hashes", "-r", str(LOCK)],
                   check=True, timeout=900)
    (venv / ".complete").touch()
    return python


# Runs inside the runtime virtualenv: every installed distribution, its version and what it requires.
INSTALLED = r"""
import importlib.metadata, json
print(json.dumps({d.metadata["Name"]: {"version": d.version, "requires": d.requires or []}
                  for d in importlib.metadata.distributions()}))
"""


def installed(python: Path) -> dict[str, dict[str, Any]]:
    """canonical name -> {"version", "requires"} of what the runtime virtualenv holds (pip and setuptools aside)."""
    run = subprocess.run([str(python), "-I", "-c", INSTALLED], capture_output=True, text=True, timeout=120, check=True)
    found = {canonicalize_name(name): info for name, info in json.loads(run.stdout).items()}
    return {name: info for name, info in found.items() if name not in {"pip", "setuptools"}}


def closure(roots: set[str], packages: dict[str, dict[str, Any]]) -> set[str]:
    """`roots` and everything they require on this platform, transitively, as the installed metadata says."""
    needed: set[str] = set()
    pending = [(name, frozenset()) for name in roots]
    while pending:
        name, extras = pending.pop()
        if name in needed and not extras:
            continue
        needed.add(name)
        for text in packages[name]["requires"]:
            requirement = Requirement(text)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": extra}) for extra in {"", *extras}):
                pending.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return needed


def probe(python: Path, app_root: Path) -> dict[str, Any]:
    run = subprocess.run(
        [str(python), "-I", "-c", PROBE, str(app_root), str(corpus_file("pc-landsat-c2-l2-single-item.json")), ",".join(DEV_ONLY)],
        capture_output=True, text=True, timeout=300, check=False, cwd=app_root, env={"PATH": os.environ.get("PATH", "")},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def python() -> Path:
    return runtime_python()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package(ROOT, tmp_path_factory.mktemp("publish") / "package.zip")


def test_funcignore_uses_only_what_core_tools_understands() -> None:
    patterns = [line.strip() for line in (ROOT / ".funcignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")]  # negation is not supported by func publish


def test_the_package_holds_the_app_and_nothing_dev_only(package: Path) -> None:
    files = {path.relative_to(package).as_posix() for path in package.rglob("*") if path.is_file()}
    assert {"function_app.py", "host.json", "requirements.txt", "shared/__init__.py", "shared/settings.py"} <= files
    assert {path.relative_to(ROOT).as_posix() for path in (ROOT / "shared").rglob("*.py")} <= files
    leaked = sorted(name for name in files for excluded in NEVER_DEPLOYED if name == excluded or name.startswith(excluded))
    assert leaked == []
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    size = sum((package / name).stat().st_size for name in files)
    assert size < MAX_PACKAGE_BYTES, sorted(files, key=lambda name: -(package / name).stat().st_size)[:10]


def test_the_package_imports_and_indexes_its_functions_with_requirements_txt_alone(python: Path, package: Path) -> None:
    report = probe(python, package)
    assert report["import_error"] is None
    assert report["unresolved"] == {}  # every import resolves: a runtime package missing from requirements.txt fails here
    assert report["dev_only"] == {}
    assert report["outside"] == []  # nothing was loaded from the repository or the dev virtualenv
    assert report["item_problem"] is None  # a real item validates: pystac's schemas and the validator ship
    queues = {name: [(b["type"], b["direction"], b["queueName"], b["connection"]) for b in bindings]
              for name, bindings in report["functions"].items() if bindings[0]["type"] == "queueTrigger"}
    assert queues == {
        "submit": [("queueTrigger", "IN", "%SUBMIT_QUEUE%", "AzureWebJobsStorage")],
        "work": [("queueTrigger", "IN", "%WORK_QUEUE%", "AzureWebJobsStorage")],
        "poll": [("queueTrigger", "IN", "%POLL_QUEUE%", "AzureWebJobsStorage")],
        "blob_created": [("queueTrigger", "IN", "%DROP_EVENTS_QUEUE%", "AzureWebJobsStorage")],
    }
    # Every function, queue-triggered or not, is indexed exactly as in the dev environment the other tests use.
    assert report["functions"] == {function.get_function_name(): json.loads(function.get_function_json())["bindings"]
                                   for function in functions_of(function_app.app)}


def test_the_runtime_virtualenv_has_no_dev_requirement(python: Path) -> None:
    run = subprocess.run([str(python), "-I", "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
                         capture_output=True, text=True, timeout=120, check=True)
    installed = {package["name"].lower() for package in json.loads(run.stdout)}
    assert {"azure-functions", "azure-identity", "pystac"} <= installed
    assert {"pytest", "aiohttp", "azure-planetarycomputer", "ruff", "pycep-parser", "pathspec"} & installed == set()


def test_the_probe_catches_dev_only_imports_and_missing_packages(python: Path, tmp_path: Path) -> None:
    """The check itself can fail: an app that reaches the emulator or pytest, even lazily, is reported."""
    shutil.copytree(ROOT / "shared", tmp_path / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "function_app.py").write_text(
        "import azure.functions as func\n\n"
        "app = func.FunctionApp()\n\n\n"
        "def later():\n"
        "    import pytest\n"
        "    from emulator import EmulatorServer\n"
        "    return pytest, EmulatorServer\n"
    )
    report = probe(python, tmp_path)
    assert report["unresolved"] == {"function_app.py": ["pytest"]}
    assert report["dev_only"] == {"function_app.py": ["emulator"]}
    (tmp_path / "function_app.py").write_text("import devhost.queue_host\n")
    assert probe(python, tmp_path)["import_error"] == "ModuleNotFoundError: No module named 'devhost'"


# ----- the lock -----------------------------------------------------------------------------------------------


def test_the_lock_pins_every_package_with_its_hashes() -> None:
    for line in requirement_lines(LOCK):
        assert PIN.match(line), line[:120]  # no ranges, URLs, editables or index options
        assert HASH.search(line), f"no sha256 hash: {line[:120]}"
    assert len(pins(LOCK)) > len(pins(DIRECT))  # the transitive dependencies are there too
    assert "make lock" in LOCK.read_text().split("\n", 3)[1]  # how it was made (uv's header)


def test_the_lock_is_fresh_against_the_direct_dependencies(python: Path) -> None:
    """requirements.in changed without `make lock` (a new, removed or re-pinned dependency) fails here."""
    locked, direct = pins(LOCK), pins(DIRECT)
    assert {name: locked.get(name) for name in direct} == direct  # every direct pin, at its version
    packages = installed(python)
    assert {name: info["version"] for name, info in packages.items()} == locked  # the lock, all of it, nothing else
    assert closure(set(direct), packages) == set(locked)  # exactly what the direct dependencies need, no leftover


def test_the_closure_follows_extras_and_markers() -> None:
    packages = {
        "app": {"version": "1", "requires": ["lib[fast]>=1", "winonly; sys_platform == 'win32'"]},
        "lib": {"version": "1", "requires": ["speedup; extra == 'fast'", "docs; extra == 'docs'", "base"]},
        "speedup": {"version": "1", "requires": []}, "base": {"version": "1", "requires": []},
        "docs": {"version": "1", "requires": []}, "winonly": {"version": "1", "requires": []},
    }
    expected = {"app", "lib", "speedup", "base"} | ({"winonly"} if sys.platform == "win32" else set())
    assert closure({"app"}, packages) == expected


def test_the_tests_run_on_the_locked_versions() -> None:
    """The dev virtualenv holds the deployed versions of every locked package, so the suite tests what runs in Azure."""
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    locked = pins(LOCK)
    assert {name: version(name) for name in locked} == locked
