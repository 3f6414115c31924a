# The two commands of the README, each doing its own set-up:
#   make demo   set up, simulate the demo cohort once, run `kedro run --pipelines=train`, then predict
#               the demo's held-out slide
#   make test   set up, run the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_RAW := data/01_raw/demo_her2st
DEMO_SLIDE := data/01_raw/demo_slide

.PHONY: setup demo demo-data test test-fast lint viz lab mlflow clean-data

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e ".[test,wsi,cluster,tracking]"
	$(BIN)/python -m pip check
	touch $@

demo-data: setup
	@if [ -n "$$(ls -A $(DEMO_RAW) 2>/dev/null)" ] && [ -n "$$(ls -A $(DEMO_SLIDE) 2>/dev/null)" ]; then echo "demo cohort present: $(DEMO_RAW), $(DEMO_SLIDE)"; \
	else $(BIN)/kedro run --pipelines=demo_cohort; fi

demo: demo-data
	$(BIN)/kedro run --pipelines=train
	$(BIN)/kedro run --pipelines=predict

test: setup
	$(BIN)/python -m pytest

# One style (pyproject.toml [tool.ruff]); CI runs this before the tests. `ruff format .` applies it.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The quick loop while editing: everything but the tests that train models, run whole pipelines,
# start servers or read the real HER2ST files (markers `slow`, `servers`, `real_data`; pyproject.toml).
# `make test` still runs everything.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not servers and not real_data"

viz: setup
	$(BIN)/kedro viz run --host 127.0.0.1 --port 4141

# The MLflow UI on every run `kedro run` recorded (store and address: conf/base/mlflow.yml,
# 127.0.0.1:5000; one experiment per cohort). kedro-mlflow starts the `mlflow` executable by name,
# so the environment's bin/ goes first on PATH.
mlflow: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/kedro mlflow ui

lab: setup
	$(BIN)/kedro jupyter lab --ip 127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root)
