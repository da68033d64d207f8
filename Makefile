# Rapid Response: the README's two commands (`make demo`, `make test`) and friends.
# Everything runs in a project virtualenv (.venv) installed from the hashed lock files on first
# use, and re-installed from them whenever they change.

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock

# One universal lock (every platform's hashes, markers kept) for Python 3.11 and later, so the
# same file installs on Linux x86_64/aarch64 servers and developers' machines alike. uv keeps
# the versions already pinned unless pyproject.toml asks otherwise; `make lock
# LOCK_FLAGS=--upgrade` moves everything to the newest allowed versions.
LOCK_FLAGS ?=
UV_COMPILE  = $(BIN)/python -m uv pip compile pyproject.toml --quiet --universal \
              --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' \
              $(LOCK_FLAGS)

# What `make test-fast` leaves out: every test that needs a service (markers are assigned in
# tests/conftest.py from the fixtures a test uses).
SERVICE_MARKERS := postgres or redis or moto or e2e or browser
# A port nothing listens on: `make test-fast` points the tests' services there, so a test that
# needs one and is not marked fails instead of passing by luck.
DEAD_URLS := RAPID_TEST_PG_URL=postgresql+psycopg://127.0.0.1:9/postgres \
             RAPID_TEST_REDIS_URL=redis://127.0.0.1:9/0

.PHONY: install lock services browser demo demo-serve screenshots test test-fast lint format bench clean release deploy-lint

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)

# The dev lock is production + the demo and test extras; the project itself goes in without
# dependencies, so nothing unlocked slips in through it.
$(STAMP): $(DEV_LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Re-run after any change to pyproject.toml's dependencies (tests/test_install.py fails until
# the locks agree with it).
lock: | $(BIN)/python
	$(BIN)/python -m uv --version >/dev/null 2>&1 || $(BIN)/python -m pip install --quiet uv
	$(UV_COMPILE) -o $(LOCK)
	$(UV_COMPILE) --extra demo --extra test -o $(DEV_LOCK)

# Start the local Redis and PostgreSQL when they are installed but not answering.
services:
	@bash .ci/services

# Debian's chromium for the dashboard's browser tests (playwright never downloads a browser).
# Needs root only when chromium is missing.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

demo: install
	$(BIN)/rapid demo

# The demo with the war room: prints the dashboard's URL and a login token, runs the blast at
# a rate you can watch, and keeps serving until Ctrl-C.
demo-serve: install
	$(BIN)/rapid demo --serve

# The README's dashboard pictures: the browser tests save each page to docs/screenshots/.
screenshots: install services browser
	RAPID_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q -m browser \
	  tests/test_dashboard_browser.py; $(NO_TESTS)

# pytest exits 5 when it collected no test; say so (it fails the target like any non-zero).
NO_TESTS := s=$$?; [ $$s -ne 5 ] || echo "error: pytest ran no test" >&2; exit $$s

# Two pytest workers (pytest-xdist), a test file each at a time: most of the suite waits on
# processes and services, so two files share the two cores of a CI host. Each worker has its
# own PostgreSQL database and moto server; Redis keys carry a per-test prefix.
# `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 2
test: install services browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); $(NO_TESTS)

test-fast: install
	$(DEAD_URLS) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m 'not ($(SERVICE_MARKERS))' $(PYTEST_ARGS); \
	$(NO_TESTS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install services
	$(BIN)/python -m benchmarks.run

# Property-based fuzzing of the entry points (intake, webhooks, CSV import, API) at 10,000
# cases each (`make test` runs the same tests at 200); each test prints a line of counts.
.PHONY: fuzz
fuzz: install services
	FUZZ_PROFILE=fuzz $(BIN)/python -m pytest -q -s --timeout=7200 \
		tests/test_fuzz_intake.py tests/test_fuzz_webhooks.py tests/test_fuzz_import.py \
		tests/test_fuzz_api.py; $(NO_TESTS)

# The release artifact instances install from, offline (deploy/release.sh): wheelhouse of
# requirements.lock + the project wheel + deploy/boot, in dist/. With RELEASE_BUCKET=name it
# is also uploaded to s3://name/releases/ (the only step that calls AWS).
release: install
	PYTHON=$(BIN)/python bash deploy/release.sh

# cfn-lint (informational checks on) and checkov on the CloudFormation template, from their
# own virtualenv (checkov pins dependencies the project's venv must not share).
DEPLOY_LINT_VENV ?= build/deploy-lint
DEPLOY_LINT_STAMP := $(DEPLOY_LINT_VENV)/.installed-3.3.30
$(DEPLOY_LINT_STAMP):
	$(PYTHON) -m venv $(DEPLOY_LINT_VENV)
	$(DEPLOY_LINT_VENV)/bin/python -m pip install --quiet checkov==3.3.30 cfn-lint==1.58.0
	touch $(DEPLOY_LINT_STAMP)

deploy-lint: $(DEPLOY_LINT_STAMP)
	$(DEPLOY_LINT_VENV)/bin/cfn-lint --include-checks I -- deploy/cloudformation/rapid-response.yaml
	$(DEPLOY_LINT_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation \
	  -f deploy/cloudformation/rapid-response.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
