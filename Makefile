# Every target creates .venv on first use: torch==2.13.0 first (a CPU wheel), then the project.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test bench bench-quick lint examples docs dist clean

# make docs SOURCES=a,b re-measures only those sources (python docs/build.py --list names them)
SOURCES ?=

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,all]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/thalweg train

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup

bench: $(STAMP)
	$(PY) benchmarks/step_time.py

bench-quick: $(STAMP)
	$(VENV)/bin/thalweg bench run quick

examples: $(STAMP)
	$(PY) examples/seeds.py

docs: $(STAMP)
	$(PY) docs/build.py --sources "$(SOURCES)"

# the wheel and the sdist in dist/ (built from this tree, without an isolated build env), checked
dist: $(STAMP)
	rm -rf dist build
	$(PY) -m build --no-isolation --sdist --wheel --outdir dist .
	$(PY) -m twine check --strict dist/*

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples docs
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests/test_architecture.py

clean:
	rm -rf $(VENV) runs .pytest_cache dist build
