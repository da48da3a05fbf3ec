# The two commands a newcomer runs: `make demo` and `make test`.
# Both set up everything they need first (apt Elixir if missing, the .venv).

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
SUDO    = $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
BUILD_WHEELS = .cache/build-wheels

.PHONY: demo test setup setup-base bytecode elixir lint typecheck test-python test-elixir dialyzer bench docs clean

demo: setup-base bytecode elixir
	cd elixir_harness && mix run ../examples/demo.exs
	cd elixir_harness && mix run ../examples/elixir/beam_calls.exs
	cd elixir_harness && mix run ../examples/elixir/http_service.exs

test: setup bytecode elixir lint typecheck test-python test-elixir dialyzer

# `make demo` needs the package alone (setup-base); `make test` every extra (setup).
setup-base: $(VENV)/.installed-base
setup: $(VENV)/.installed $(BUILD_WHEELS)/.fetched

# (setup.py builds the codec's C accelerator: a change to it reinstalls;
# without a C compiler it is skipped and the codec stays pure Python, so one
# is installed from apt when missing: the tests check the accelerator is built.
# snakepit-py --version then says whether the accelerators are in use, and why not.)
$(VENV)/.installed-base: pyproject.toml setup.py snakepit_py/codec/_cetf.c snakepit_py/_cproc.c \
  snakepit_py/_cmetrics.c
	@command -v cc >/dev/null 2>&1 && $(PYTHON) -c "import os, sysconfig; \
	  assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" \
	  2>/dev/null || { \
	  echo "Installing a C compiler and the Python headers from apt (for the codec's C accelerator)..."; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq gcc libc6-dev python3-dev >/dev/null; }
	@echo "==> Creating $(VENV) and upgrading pip..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "==> Installing snakepit_py (editable; builds its C accelerators)..."
	$(PY) -m pip install --progress-bar on -e .
	$(VENV)/bin/snakepit-py --version
	touch $@

# Everything the tests use: the dev tools and every extra, Ray included
# (a few hundred MB: pip shows each download as it goes).
$(VENV)/.installed: $(VENV)/.installed-base
	@echo "==> Installing the test tools and the optional dependencies (.[dev,ray])..."
	$(PY) -m pip install --progress-bar on -e '.[dev,ray]'
	touch $@

# The build backend for the other Pythons' manylinux wheels: tests/test_packaging.py
# builds one for each of 3.10, 3.12 and 3.13 it finds, offline, with setuptools from
# here (a pure wheel: the newest for 3.10, which the newer Pythons take too).
$(BUILD_WHEELS)/.fetched: pyproject.toml | $(VENV)/.installed-base
	@echo "==> Downloading the build backend for the other Pythons' wheels ($(BUILD_WHEELS))..."
	$(PY) -m pip download -q --only-binary=:all: --no-deps --python-version 3.10 \
	  -d $(BUILD_WHEELS) 'setuptools>=77'
	touch $@

# Workers start from bytecode even where PYTHONDONTWRITEBYTECODE is set
# (compileall only rewrites what changed).
bytecode: setup-base
	$(PY) -m compileall -q snakepit_py examples benchmarks tests/workers elixir_harness/test/fixtures >/dev/null

elixir:
	@command -v elixir >/dev/null 2>&1 && command -v mix >/dev/null 2>&1 || { \
	  echo "Installing Elixir from apt..."; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq elixir erlang-dev erlang-os-mon >/dev/null; }

lint: setup
	$(PY) -m ruff check setup.py snakepit_py tests benchmarks examples priv scripts
	$(PY) -m ruff format --check setup.py snakepit_py tests benchmarks examples priv scripts

# mypy ([tool.mypy] in pyproject.toml): the package clean, its public API under --strict;
# tests/typecheck checks what users see of it (@snakepit.method keeps their types)
typecheck: setup
	$(PY) -m mypy

# Debian's dialyzer on the harness (no hex: scripts/dialyzer.sh builds the PLT once
# under .cache/dialyzer and analyses the compiled modules).
dialyzer: elixir
	@command -v dialyzer >/dev/null 2>&1 || { \
	  echo "Installing dialyzer from apt..."; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq erlang-dialyzer >/dev/null; }
	scripts/dialyzer.sh

# Under coverage, across every worker subprocess the tests start ([tool.coverage.run]
# in pyproject.toml); the line coverage is reported per package area (docs/testing.md).
test-python: setup
	rm -rf .coverage && mkdir -p .coverage
	$(PY) -m coverage run -m pytest -q $(PYTEST_ARGS)
	$(PY) -m coverage combine -q
	$(PY) scripts/coverage_report.py

test-elixir: setup elixir
	cd elixir_harness && mix format --check-formatted && \
	  MIX_ENV=test mix compile --warnings-as-errors --force && mix test

# The API reference (docs/api_reference.md): docs/api/python.md from the docstrings,
# docs/api/elixir.md from @moduledoc/@doc/@spec; tests/test_api_docs.py checks them.
docs: setup elixir
	$(PY) scripts/gen_api_docs.py
	cd elixir_harness && mix run --no-start ../scripts/gen_api_docs.exs

bench: setup bytecode elixir
	taskset -c 0 $(PY) benchmarks/bench_codec.py
	taskset -c 0 $(PY) benchmarks/bench_port.py
	taskset -c 0 $(PY) benchmarks/bench_stream.py
	taskset -c 0 $(PY) benchmarks/bench_grpc.py
	cd elixir_harness && taskset -c 0 mix run ../benchmarks/bench_beam.exs latency
	cd elixir_harness && mix run ../benchmarks/bench_beam.exs throughput

clean:
	rm -rf $(VENV) elixir_harness/_build .pytest_cache .ruff_cache .coverage
