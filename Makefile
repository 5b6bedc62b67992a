# breedfilter — `make demo` runs the main job, `make test` runs every test. Each bootstraps its own venv.
# Targets are idempotent: a venv is (re)built only when the files that pin it change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAM_STAMP := $(SAM_VENV)/.installed
SAM_CLI_VERSION := 1.170.0
PIP_FLAGS := --quiet --disable-pip-version-check
# The SAM CLI reads SAM_CLI_TELEMETRY (not AWS_SAM_CLI_TELEMETRY): 0 turns its telemetry off for every recipe.
export SAM_CLI_TELEMETRY := 0
# Fake credentials: nothing here reaches AWS (sam validate/build need a region and some credentials).
SAM_ENV := AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1

.PHONY: demo test train lint format build bench venv sam-venv clean

demo: $(STAMP)  ## run the router on sample events against the local stack
	$(PY) -m breedfilter.demo $(ARGS)

test: $(STAMP)  ## run all tests
	$(PY) -m pytest $(PYTEST_ARGS)

BENCH_MODEL ?= out/bench/serving/model
bench: $(STAMP)  ## serving benchmarks on ../shared/data photos: endpoint vs the naive handler, the twin end to end
	$(PY) bench/endpoint_serving.py --model-dir $(BENCH_MODEL) --make-artifact
	$(PY) bench/twin_throughput.py --model-dir $(BENCH_MODEL)

train: $(STAMP)  ## training/train.py with ARGS, e.g. make train ARGS="--data DIR --epochs 5"
	$(PY) training/train.py $(ARGS)

lint: $(STAMP) $(SAM_STAMP)  ## ruff, cfn-lint, sam validate --lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/cfn-lint template.yaml
	$(SAM_ENV) $(SAM_VENV)/bin/sam validate --lint --template template.yaml

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The functions build with functions/router/Makefile (BuildMethod: makefile): wheels for the Lambda's Python and arm64,
# installed by this venv's pip, so neither Docker nor the Lambda's Python interpreter is needed here.
build: $(SAM_STAMP)  ## sam build (no Docker, no Lambda Python interpreter: functions/router/Makefile)
	$(SAM_ENV) PYTHON=$(CURDIR)/$(SAM_VENV)/bin/python $(SAM_VENV)/bin/sam build --template template.yaml

venv: $(STAMP)
sam-venv: $(SAM_STAMP)

$(STAMP): pyproject.toml functions/router/requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade "pip>=24"
	$(PY) -m pip install $(PIP_FLAGS) -e ".[dev]" -r functions/router/requirements.txt
	@touch $@

# aws-sam-cli pins its own boto3, so it lives in a venv of its own.
$(SAM_STAMP):
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install $(PIP_FLAGS) "aws-sam-cli==$(SAM_CLI_VERSION)"
	@touch $@

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .ruff_cache
