# Two commands: `make demo` (run the pipeline locally) and `make test` (the whole suite).
# Both set everything up first: a virtualenv with the Python packages, and Azurite from npm.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# checkov pins its own dependencies tightly: it lives in a virtualenv of its own (requirements-checkov.txt).
CHECKOV_VENV := .venv-checkov
FILES ?=
COLLECTION ?=
VIA ?= queue
SCENARIO ?=
REPAIR ?=
LOCK_FLAGS ?=

.PHONY: setup lock demo test bench emulator up clean

setup: $(VENV)/.installed node_modules/.installed

# requirements.txt first, exactly as the remote build installs it (every package pinned and hash-checked),
# then the dev tools (requirements-dev.txt names the same direct pins, so nothing of the runtime moves).
$(VENV)/.installed: requirements.txt requirements.in requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

# Recompile requirements.txt after changing requirements.in: every package the app loads, pinned with its
# hashes, resolved for the Azure host (Linux x86-64, Python 3.11), whatever machine runs this. Pins already in
# requirements.txt are kept where they still fit; `make lock LOCK_FLAGS=--upgrade` moves every package to its newest.
lock: $(VENV)/.installed
	$(BIN)/uv pip compile requirements.in --quiet --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" --output-file requirements.txt $(LOCK_FLAGS)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(BIN)/python -m tools.demo --files "$(FILES)" --collection "$(COLLECTION)" --via "$(VIA)" --scenario "$(SCENARIO)" --repair "$(REPAIR)"

test: setup $(CHECKOV_VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: setup
	$(BIN)/python -m bench.emulator_throughput

# Keep the local stack running (Azurite persisted under .run/, the emulator, function_app.py); Ctrl-C stops it.
up: setup
	$(BIN)/geocatalog-ingest up

emulator: setup
	$(BIN)/python -m emulator --port 8080

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .run .pytest_cache
