# The two commands a newcomer needs: `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint bench clean test-tools

$(VENV)/.run-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[embedded]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev,embedded]'
	touch $@ $(VENV)/.run-installed

# Serves config.example.yaml on an embedded in-memory S3. The signing key below is for local use
# only; any real deployment sets GATEWAY_SECRET_KEY (shared by all its instances).
run: $(VENV)/.run-installed
	GATEWAY_SECRET_KEY="$${GATEWAY_SECRET_KEY:-local-development-only-secret}" \
		$(BIN)/gateway serve --config config.example.yaml

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy

# nginx and curl for tests/test_nginx.py: installed when missing and root (as CI is), else the
# tests that need them are skipped and -rs prints why.
test-tools:
	@bash .ci/ensure-tools

test: lint test-tools
	$(BIN)/pytest -rs

# Runs every bench/bench_*.py (local servers only, about ten minutes on 2 cores) and rewrites
# BENCHMARKS.md with the figures. wrk (figure 1c) is installed first when missing and root.
bench: $(VENV)/.dev-installed
	@bash bench/ensure-tools
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
