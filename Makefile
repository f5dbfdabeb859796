# The two commands a newcomer needs: `make demo` (the function on the sample events, all local) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell scripts/find-python)
VENV := .venv
SAM_VENV := .venv-sam
SAM_CLI_VERSION := 1.170.0
# The linter `sam validate --lint` runs, pinned as in requirements-dev.txt: a new rule must not turn CI red overnight.
CFN_LINT_VERSION := 1.58.0
# checkov pins its own boto3 (1.35): it gets its own environment, like the SAM CLI.
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
REGION ?= eu-central-1
export PYTHONPATH := src:.
# Every SAM CLI run from here (and from the dev tools make starts): no telemetry, and its settings (installation id,
# layer cache, its last look for a newer version) kept in .venv-sam rather than the user's home. __SAM_CLI_APP_DIR
# is SAM CLI's own override of that folder (samcli/cli/global_config.py); scripts/sam, the SAM CLI for a person
# (`scripts/sam deploy --guided`), and kickout_dev/sam_docker.py set both too.
export SAM_CLI_TELEMETRY := 0
SAM_CLI_HOME := $(CURDIR)/$(SAM_VENV)/sam-cli-home
export __SAM_CLI_APP_DIR := $(SAM_CLI_HOME)
SAM := scripts/sam
# checkov asks PyPI for a newer checkov on every run, even with --skip-download, and keeps the answer in
# ~/.cache/checkov: its own switch turns that off (checkov/common/util/env_vars_config.py).
export CKV_SKIP_PACKAGE_UPDATE_CHECK := true
# Nothing outside the checkout: every temporary file of what make runs (pytest's tmp_path, SAM's scratch copy of
# src/, pip's build folders, the lark grammar cache checkov's HCL parser keeps) in .tmp, not /tmp; pip keeps no
# cache in ~/.cache/pip (the wheelhouse below is the cache a build needs).
export TMPDIR := $(CURDIR)/.tmp
$(shell mkdir -p $(TMPDIR))
export PIP_NO_CACHE_DIR := 1

.PHONY: demo test lint typecheck imports template-lint checkov unit install sam build clean openapi bench

# The built function under Lambda's Runtime Interface Emulator (`make local`) where this machine can run it (Linux,
# python3.13; the SAM CLI is installed on first use), else the handler in-process. Exit 69: cannot run it here.
demo: install
	@status=0; $(VENV)/bin/python -m kickout_dev.local_lambda || status=$$?; \
	if [ $$status -eq 69 ]; then \
		echo "make demo: falling back to the in-process demo (python -m kickout_dev.demo)"; \
		$(VENV)/bin/python -m kickout_dev.demo; \
	else \
		exit $$status; \
	fi

.PHONY: local
# `sam local invoke` without Docker: ARGS="events/api.json ..." for some events, ARGS=--serve for POST /kickouts.
local: install
	$(VENV)/bin/python -m kickout_dev.local_lambda $(ARGS)

.PHONY: sam-local sam-local-image
# `sam local invoke` on the demo's events and `sam local start-api` (ARGS=--serve), in Docker, offline:
# docs/local-runtime.md "With Docker, the usual SAM way". Starts dockerd if none runs (root); removes every container, network and image it made.
sam-local: install sam
	$(VENV)/bin/python -m kickout_dev.sam_docker $(ARGS)

# The stand-in for Lambda's python3.13 base image (kickout/lambda-python3.13-standin:local), from Debian packages.
sam-local-image: install sam
	$(VENV)/bin/python -m kickout_dev.standin_image

test: lint typecheck imports template-lint checkov unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

# The layers of src/handler and of benchmarks/ (pyproject.toml [tool.importlinter]): imports run one way down, the
# core stays pure.
imports: install
	$(VENV)/bin/lint-imports

template-lint: install sam
	$(VENV)/bin/cfn-lint --append-rules cfn_lint_serverless.rules -- template.yaml
	$(SAM) validate --lint --template-file template.yaml --region $(REGION)

# The template's security findings: each one fixed or skipped in template.yaml with its reason (Metadata checkov).
# --skip-download: offline, no call to Prisma Cloud.
checkov: $(CHECKOV_VENV)/.installed
	$(CHECKOV_VENV)/bin/checkov --file template.yaml --framework cloudformation --skip-download --compact --quiet

$(CHECKOV_VENV)/.installed:
	test -n "$(PYTHON)"
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

# PYTEST_ARGS: some of the tests, or pytest's options (.ci/run's offline slice).
unit: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# docs/openapi.json from the routes and models in src/handler/entry/api.py; tests/integration/test_openapi.py fails when it drifts.
openapi: install
	$(VENV)/bin/python -m kickout_dev.openapi

# docs/performance.md: figures as ratios against baselines measured in the same run (builds the artifact; a few
# minutes, loopback only).
bench: install sam
	$(VENV)/bin/python -m benchmarks.run

install: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt src/requirements.txt
	test -n "$(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# SAM CLI lives in its own environment: it pins its own boto3 and would fight the function's.
sam: $(SAM_VENV)/.installed $(SAM_CLI_HOME)/.settled

# SAM CLI's settings, written once: telemetry off (SAM_CLI_TELEMETRY=1 still turns it on), and its last look on PyPI
# for a newer version of itself dated the last day of 9999. It looks once a week, after build, validate, local and
# deploy (samcli/lib/utils/version_checker.py), and has no setting to stop it; that date is the one that does.
# The version is pinned here (SAM_CLI_VERSION): a notice that a newer one exists would change nothing.
$(SAM_CLI_HOME)/.settled: | $(SAM_VENV)/.installed
	$(SAM_VENV)/bin/python -c 'from samcli.cli.global_config import GlobalConfig; settings = GlobalConfig(); \
		settings.telemetry_enabled = False; settings.last_version_check = 253402214400.0'
	touch $@

$(SAM_VENV)/.installed:
	test -n "$(PYTHON)"
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION) cfn-lint==$(CFN_LINT_VERSION)
	touch $@

# `sam build` without Docker needs python3.13 on PATH: put the interpreter's folder first.
# LAMBDA_ARCH=x86_64 builds wheels for this machine (to run the artifact here); the default is Lambda's arm64.
BUILD_DIR ?= .aws-sam/build
LAMBDA_ARCH ?= arm64
# A build leaves nothing outside BUILD_DIR: no cache (with samconfig.toml's `cached = true` SAM would make
# .aws-sam/cache and .aws-sam/deps here whatever --build-dir says), and the build.toml SAM writes beside BUILD_DIR
# (its build graph, which only cached builds read) is removed.
# The function's dependencies come from the wheelhouse (below), never from the package index: a build needs no
# network once `make wheels` has run, and installs the same wheels every time.
build: sam wheels
	PATH="$(dir $(PYTHON)):$$PATH" LAMBDA_ARCH=$(LAMBDA_ARCH) KICKOUT_WHEELHOUSE=$(WHEELHOUSE) \
		$(SAM) build --no-cached --template-file template.yaml --build-dir $(BUILD_DIR) \
		--parameter-overrides FunctionArchitecture=$(LAMBDA_ARCH); \
	status=$$?; rm -f "$(abspath $(BUILD_DIR)/..)/build.toml"; exit $$status

# The wheelhouse: src/requirements.txt and what it pulls in, as wheels for each architecture a build targets (arm64,
# Lambda's, for `make build`; x86_64 for the local runs of an x86_64 machine), downloaded from the package index once
# and again only when src/requirements.txt changes. src/Makefile picks the platform tags (`make -C src wheels`).
WHEELHOUSE := $(CURDIR)/.wheelhouse
.PHONY: wheels
wheels: $(WHEELHOUSE)/arm64/.complete $(WHEELHOUSE)/x86_64/.complete

$(WHEELHOUSE)/%/.complete: src/requirements.txt | $(SAM_VENV)/.installed
	rm -rf "$(@D)"
	$(MAKE) -C src --no-print-directory wheels LAMBDA_ARCH=$* KICKOUT_WHEELHOUSE=$(WHEELHOUSE) \
		PYTHON=$(CURDIR)/$(SAM_VENV)/bin/python
	touch $@

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) $(WHEELHOUSE) $(TMPDIR) .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis
