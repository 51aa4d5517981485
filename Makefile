# Quick start: `make reproduce` runs the whole WACV pipeline on the embedded
# synthetic default; `make test` runs the test suite. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test reproduce lint clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# torch/torchvision pinned to releases that satisfy pyproject's ranges
	$(BIN)/python -m pip install "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

reproduce: $(STAMP)
	. $(BIN)/activate && snakemake --cores 2 reproduce_wacv

# Snakemake's checks of the workflow (tests/test_profiles.py asks for no findings)
lint: $(STAMP)
	. $(BIN)/activate && snakemake --lint

clean:
	rm -rf build nasseg/metrics/*.so nasseg/metrics/_confusion.c .snakemake
