# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint

# pynxtools-spm only for the real Nanonis .sxm files it ships (tests/real_files.py): without
# its dependencies (pynxtools, ...), which are heavy and never imported.
REAL_FILES := pynxtools-spm==0.4.1

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps $(REAL_FILES)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/deepspm-bluesky demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2

bench: $(STAMP)
	$(BIN)/deepspm-bluesky bench
