# The study's two entry points: `make repro` (the DVC pipeline, default CPU configuration) and
# `make test` (the test suite). Both create the virtual environment they need on first use.
# `make pull` / `make push` fetch / publish the runs' cached outputs through the DVC remote
# (.dvc/config; README "Sharing runs"); `make repro` never needs a remote.

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1

.PHONY: venv repro pull push test test-fast lint bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	# SAM2 compiles an optional CUDA extension by default and would fetch a second torch into an
	# isolated build environment: build it against the pinned torch, without the extension.
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install --quiet --no-build-isolation --no-deps \
		-c constraints.txt "sam2==1.1.0"
	touch $(STAMP)

venv: $(STAMP)

repro: venv
	PATH="$(BIN):$$PATH" python -m dogiqa check-params
	# The download stages fill data/raw, which data.dvc records: run them first so that a fresh
	# clone without a DVC remote has the raw inputs before DVC verifies that record.
	PATH="$(BIN):$$PATH" dvc repro download download_external
	PATH="$(BIN):$$PATH" dvc repro

# The outputs of every enabled run (and the raw inputs and labels) that the default remote, or
# REMOTE=name, holds; what it lacks is reported and left to `make repro`.
pull: venv
	PATH="$(BIN):$$PATH" dvc pull --allow-missing $(if $(REMOTE),--remote $(REMOTE))

push: venv
	PATH="$(BIN):$$PATH" python -m dogiqa runs --check
	PATH="$(BIN):$$PATH" dvc push $(if $(REMOTE),--remote $(REMOTE))

test: venv
	PATH="$(BIN):$$PATH" python -m pytest -q

test-fast: venv
	PATH="$(BIN):$$PATH" python -m pytest -q -m "not slow"

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: venv
	PATH="$(BIN):$$PATH" python benchmarks/scoring.py
	PATH="$(BIN):$$PATH" python benchmarks/pipeline.py

clean-venv:
	rm -rf $(VENV)
