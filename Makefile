# Two entry points for a newcomer (see README): `make demo` and `make test`.
# Both create .venv on first use with the CPU build of PyTorch.
# On a GPU machine, set TORCH_SPEC to the CUDA build you want, e.g.
#   make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" test
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

# The scheduler's hot modules are compiled with mypyc when installed (setup.py, a few
# minutes), so an edit to a compiled module rebuilds. TIDAL_COMPILE=0 installs pure
# Python (same decisions, a quarter to a half of the speed); stale extensions are removed first.
# Under make a failed compile is an error (a plain pip install falls back to pure Python).
TIDAL_COMPILE ?= 1
export TIDAL_COMPILE
HOT := $(shell $(PYTHON) -c "import runpy; print(' '.join('src/' + m.replace('.', '/') + '.py' for m in runpy.run_path('src/tidal/_build.py')['COMPILED']))") src/tidal/_build.py

$(BIN)/tidal: pyproject.toml setup.py $(HOT)
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	find src -name '*.so' -delete
	$(BIN)/pip install -q $(TORCH_SPEC) -e '.[dev]'
	touch $(BIN)/tidal

setup: $(BIN)/tidal

demo: setup
	$(BIN)/tidal demo

lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_schedule.py
	$(BIN)/python benchmarks/bench_runtime.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build
	find src -name '*.so' -delete
