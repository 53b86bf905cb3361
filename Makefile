# Set-up and entry points. Everything installs into .venv from this project's own files:
# pyproject.toml (dependencies) and constraints.txt (the tested versions, torch CPU pinned).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow test-all bench bench-quick lint ui clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --constraint constraints.txt --editable '.[test]'
	touch $(STAMP)

## The main job: the demo sweep, ending with reports/demo/index.html
demo: setup
	$(BIN)/harness-train -m experiment=demo

## The test suite: lint, then every test not marked slow (under 10 minutes on 2 cores)
test: setup
	$(BIN)/ruff check harness tasks tests hydra_plugins benchmarks
	$(BIN)/pytest -m "not slow"

## The end-to-end tests marked slow: real sweeps, servers, SLURM, a browser (CI runs them too)
test-slow: setup
	$(BIN)/pytest -m slow

## Both
test-all: test test-slow

## Harness vs bare PyTorch, tracking and diagnostics overhead (a few minutes); the figures are
## appended to benchmarks/results/overhead.csv. Every benchmark: python -m benchmarks
bench: setup
	$(BIN)/python -m benchmarks.overhead

## The short version that CI runs, so a regression is visible in its log (results in $TMPDIR,
## so the checkout stays clean). 1 torch thread: with 2 threads on 2 busy cores it took 70-90 s
## and its figures were noise (10 s and sane figures with 1 thread, same load)
bench-quick: setup
	$(BIN)/python -m benchmarks.overhead --quick --threads 1 --results $(or $(TMPDIR),/tmp)

lint: setup
	$(BIN)/ruff check harness tasks tests hydra_plugins benchmarks

## MLflow UI on the project's store at http://127.0.0.1:5000; first prints each experiment's
## runs URL (a bare experiment link opens MLflow 3's GenAI overview, not the runs)
ui: setup
	$(BIN)/python -m harness.report.ui sqlite:///$(CURDIR)/mlflow.db

clean:
	rm -rf $(VENV) outputs reports/*/ mlflow.db mlflow.db.lock mlartifacts checkpoints
