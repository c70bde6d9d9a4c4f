# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Steady CPU timings (glibc's default allocator makes them swing between processes).
export MALLOC_MMAP_THRESHOLD_ := 1000000000000
export MALLOC_TRIM_THRESHOLD_ := 1000000000000

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip -c constraints.txt || true
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/expertir demo

test: $(STAMP)
	$(PY) -m pytest -q -x --durations=10

# The benchmark data folder (layouts: docs/data.md), e.g. make bench DATA=path/to/data
DATA ?=

bench: $(STAMP)
	@test -n "$(DATA)" || { echo "make bench needs DATA=path/to/benchmark/data"; exit 2; }
	$(PY) -m expertir.cli.main bench all --data-root $(DATA)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
