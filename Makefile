# The two commands a newcomer needs: `make run` and `make test`. Both create .venv when needed.
# Another interpreter gets a venv of its own: `make test PYTHON=python3.13` uses .venv-python3.13.
PYTHON ?= python3
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
BIN := $(VENV)/bin
# PYTHON's path, found through pyenv when it is installed there but not the active version.
PYTHON_EXE = $(shell bash .ci/find-python $(PYTHON))
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test suite lint bench clean test-tools

$(VENV)/.run-installed: pyproject.toml
	@echo "make: installing the gateway and its dependencies into $(VENV) (the first time: about 80"
	@echo "      packages, 330 MB, one to two minutes; quiet meanwhile)..."
	test -x $(BIN)/python || $(PYTHON_EXE) -m venv $(VENV)
	$(PIP) install -e '.[embedded]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml
	@echo "make: installing the gateway with its development tools into $(VENV) (the first time:"
	@echo "      one to three minutes; quiet meanwhile)..."
	test -x $(BIN)/python || $(PYTHON_EXE) -m venv $(VENV)
	$(PIP) install -e '.[dev,embedded]'
	touch $@ $(VENV)/.run-installed

# Serves config.example.yaml on an embedded in-memory S3, with the file's development signing key
# unless GATEWAY_SECRET_KEY is set (the gateway refuses that key outside storage.embedded).
run: $(VENV)/.run-installed
	@echo "make: starting the gateway; it is ready at the log line 'serving on 127.0.0.1:8080'"
	$(BIN)/gateway serve --config config.example.yaml

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy

# nginx, curl and Go for tests/test_nginx.py and tests/test_archive_extractors.py: installed when
# missing and root (as CI is), else the tests that need them are skipped and -rs prints why.
test-tools:
	@bash .ci/ensure-tools
	@bash .ci/ensure-peers

test: lint suite

# The test suite alone (CI runs it once more on the newest Python pyproject allows).
suite: $(VENV)/.dev-installed test-tools
	$(BIN)/pytest -rs

# Runs every bench/bench_*.py (local servers only, about ten minutes on 2 cores) and rewrites
# BENCHMARKS.md with the figures. wrk (figure 1c) is installed first when missing and root.
bench: $(VENV)/.dev-installed
	@bash bench/ensure-tools
	$(BIN)/python bench/run.py

clean:
	rm -rf .venv .venv-* .pytest_cache .mypy_cache .ruff_cache
