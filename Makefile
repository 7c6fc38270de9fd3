# Every target installs what it needs into .venv by itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXTRAS ?= test,dev,ray,plot,dask,s3,docs

.PHONY: install test lint typecheck pytest faults dist demo bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=77" wheel
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check bigsink tests examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

# the fault-injection suite alone (it runs within `make test` too): killed schedulers,
# workers and Ray heads, damaged chunks and checkpoints, a full disk, racing writers
faults: $(STAMP)
	$(PY) -m pytest -q -m fault $(PYTEST_ARGS)

# the wheel that deployments install (Ray's runtime_env, the Ray launcher, SLURM nodes):
# bigsink is on no package index
dist: $(STAMP)
	rm -rf dist
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .

demo: $(STAMP)
	$(VENV)/bin/bigsink demo

bench: $(STAMP)
	$(VENV)/bin/bigsink bench $(BENCH_ARGS)

# the documentation site in docs/_build/html: API reference from the docstrings, the user
# guide, and the gallery, which runs every example at its --small size; warnings are errors
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -E -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist build
