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
# layer cache) kept in .venv-sam rather than the user's home. __SAM_CLI_APP_DIR is SAM CLI's own override of that
# folder (samcli/cli/global_config.py); kickout_dev/sam_docker.py sets both when run without make.
export SAM_CLI_TELEMETRY := 0
export __SAM_CLI_APP_DIR := $(CURDIR)/$(SAM_VENV)/sam-cli-home

.PHONY: demo test lint typecheck template-lint checkov unit install sam build clean openapi bench

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

test: lint typecheck template-lint checkov unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

template-lint: install sam
	$(VENV)/bin/cfn-lint --append-rules cfn_lint_serverless.rules -- template.yaml
	$(SAM_VENV)/bin/sam validate --lint --template-file template.yaml --region $(REGION)

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

unit: install
	$(VENV)/bin/python -m pytest

# docs/openapi.json from the routes and models in src/handler/api.py; tests/integration/test_openapi.py fails when it drifts.
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
sam: $(SAM_VENV)/.installed

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
build: sam
	PATH="$(dir $(PYTHON)):$$PATH" LAMBDA_ARCH=$(LAMBDA_ARCH) \
		$(SAM_VENV)/bin/sam build --no-cached --template-file template.yaml --build-dir $(BUILD_DIR) \
		--parameter-overrides FunctionArchitecture=$(LAMBDA_ARCH)
	rm -f "$(abspath $(BUILD_DIR)/..)/build.toml"

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis
