# The study's two entry points: `make repro` (the DVC pipeline, default CPU configuration) and
# `make test` (the test suite). Both create the virtual environment they need on first use:
# `make repro` installs the CPU configuration only (no torch, transformers or SAM 2); `make test`
# (and `make venv-full`, for the MLLM and SAM 2 paths) adds the extras, pinned in constraints.txt.
# `make pull` / `make push` fetch / publish the runs' cached outputs through the DVC remote
# (.dvc/config; README "Sharing runs"); `make repro` never needs a remote.

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
FULL_STAMP := $(VENV)/.installed-full
# The paper's model (mPLUG-Owl3) runs its own code, written for transformers 4.37.2: a second
# environment, used only by the score stage with that model (README, GPU notes).
PAPER_VENV ?= .venv-paper
PAPER_BIN := $(abspath $(PAPER_VENV))/bin
PAPER_STAMP := $(PAPER_VENV)/.installed
export DVC_NO_ANALYTICS := 1

.PHONY: venv venv-full venv-paper paper-signatures repro pull push test test-fast lint bench \
	clean-venv

# uv installs the CPU configuration's ~150 wheels in seconds where pip takes minutes (README,
# "Set-up"); it resolves against the same constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e .
	touch $(STAMP)

# The MLLM backends, SAM 2 and the test and lint tools, in the same environment.
# pip, not uv: pip takes the pinned torch from the machine's wheel folder where it has one
# (uv would download the CUDA build).
$(FULL_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	# SAM2 compiles an optional CUDA extension by default and would fetch a second torch into an
	# isolated build environment: build it against the pinned torch, without the extension.
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install --quiet --no-build-isolation --no-deps \
		-c constraints.txt "sam2==1.1.0"
	touch $(FULL_STAMP)

venv: $(STAMP)

venv-full: $(FULL_STAMP)

$(PAPER_STAMP): requirements-paper.txt constraints-paper.txt
	$(PYTHON) -m venv $(PAPER_VENV)
	$(PAPER_BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(PAPER_BIN)/python -m pip install --quiet -c constraints-paper.txt -r requirements-paper.txt
	# The study package without its own pins (transformers 5 etc. belong to .venv).
	$(PAPER_BIN)/python -m pip install --quiet --no-deps -e .
	touch $(PAPER_STAMP)

venv-paper: $(PAPER_STAMP)

# Records which keyword arguments the paper environment's transformers accepts, for the test
# that the hf adapters pass only those (tests/fixtures/paper_env_signatures.json).
paper-signatures: venv-paper
	$(PAPER_BIN)/python tests/fixtures/record_signatures.py tests/fixtures/paper_env_signatures.json

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

test: venv-full
	PATH="$(BIN):$$PATH" python -m pytest -q

test-fast: venv-full
	PATH="$(BIN):$$PATH" python -m pytest -q -m "not slow"

lint: venv-full
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: venv-full
	PATH="$(BIN):$$PATH" python benchmarks/scoring.py
	PATH="$(BIN):$$PATH" python benchmarks/scaleout.py
	PATH="$(BIN):$$PATH" python benchmarks/pipeline.py

clean-venv:
	rm -rf $(VENV) $(PAPER_VENV)
