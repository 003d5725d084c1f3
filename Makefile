# The verbs a newcomer types. Everything installs itself: `make run` and `make test` work on a
# fresh clone.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools/bin
PORT ?= 8080

.PHONY: install proto proto-check lint test test-fast run up bench acceptance helm-lint clean

install: .venv/.installed

.venv/.installed: pyproject.toml $(wildcard uv.lock) $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) scripts/install.sh
	bash scripts/install.sh
	@touch $@

proto: install
	bash scripts/gen_protos.sh

# CI: regenerate and fail on any drift from the committed code.
proto-check: proto
	@git diff --exit-code --stat -- libs/weft-protos/src || { echo "generated protobuf code drifted: run 'make proto' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- libs/weft-protos/src)" || { echo "untracked generated files: run 'make proto' and commit"; git status --porcelain -- libs/weft-protos/src; exit 1; }

MYPY_PATHS = libs/weft-common/src libs/weft-cli/src services/dag-builder/src services/executor/src \
	services/state/src services/stream-gateway/src

lint: install
	$(TOOLS)/buf lint
	$(VENV)/bin/ruff check libs services tests bench
	$(VENV)/bin/mypy $(MYPY_PATHS)

test: install
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

run: install
	bash scripts/demo.sh

up: install
	$(VENV)/bin/weft up --http-port $(PORT)

# Every benchmark; each prints ratios (vs a plain baseline and vs its previous run in bench/results/).
bench: install
	$(PY) bench/compile.py
	$(PY) bench/engine.py
	$(PY) bench/containers.py
	$(PY) bench/durable.py
	$(PY) bench/gateway.py
	$(PY) bench/llm_stream.py
	$(PY) bench/engine_tracing.py

acceptance: install
	python3 ../shared/acceptance/run.py --start "$(VENV)/bin/weft up --http-port 18080 --data-dir $$(mktemp -d)" --base-url http://127.0.0.1:18080

helm-lint: install
	$(TOOLS)/helm lint helm/weft --set global.databaseUrl=postgresql+asyncpg://weft@db/weft
	$(TOOLS)/helm template weft helm/weft --set global.databaseUrl=postgresql+asyncpg://weft@db/weft >/dev/null

clean:
	rm -rf $(VENV) .tools .weft
