# amos-zoo: `make demo` runs the quickstart, `make test` runs the test suite.
# Both create the virtual environment (.venv) and install the package on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.amos-zoo-installed

.PHONY: demo test lint clean gpu-wheels

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.14.1 / torchvision 0.29.1 are the versions pinned for this project's machines
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	# setuptools announces every editable install with a boxed note on stderr (an InformationOnly "warning")
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/amos-zoo quickstart --out quickstart

test: $(STAMP)
	$(PY) -m pytest -n 2 --nbmake --durations=15 tests notebooks

# The pure-Python wheels a lent GPU machine lacks, in .whl/ (README "The GPU run": carry .whl)
gpu-wheels: $(STAMP)
	$(PY) benchmarks/gpu_wheels.py --dest .whl

lint: $(STAMP)
	$(VENV)/bin/ruff check amos_zoo tests benchmarks

clean:
	rm -rf $(VENV) quickstart runs
