# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Steady CPU timings (glibc's default allocator makes them swing between processes).
export MALLOC_MMAP_THRESHOLD_ := 1000000000000
export MALLOC_TRIM_THRESHOLD_ := 1000000000000

.PHONY: demo test bench results install clean

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

# Every results table, the acceptance verdict, the model cards' evaluations and the figures,
# from one evaluation run (docs/evaluation.md): make results DATA=path [RUNS=path/to/runs]
# [WEIGHTS="candidate.safetensors ..."]. Rewrites docs/results.md's generated block and the
# shipped model cards; tables and figures also go to runs/results.
RUNS    ?=
WEIGHTS ?=

results: $(STAMP)
	@test -n "$(DATA)" || { echo "make results needs DATA=path/to/benchmark/data"; exit 2; }
	$(PY) tools/results.py --data-root $(DATA) -o runs/results --write-docs \
		$(if $(RUNS),--runs $(RUNS)) $(if $(WEIGHTS),--weights $(WEIGHTS))

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
