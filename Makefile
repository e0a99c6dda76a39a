# Railyard: two commands on a fresh machine.
#   make demo   installs, migrates, seeds and starts web + scheduler + worker on the embedded default
#   make test   runs the whole suite on SQLite, then on PostgreSQL when one answers at 127.0.0.1:5432

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_URL ?= postgres://postgres@127.0.0.1:5432/railyard
REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: demo test test-sqlite test-postgres install browser lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the browser tests: Debian's package (Playwright drives it with executable_path).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's chromium for the browser tests…"; \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) \
		|| echo "Could not install chromium: browser tests will be skipped."; \
	fi

demo: $(STAMP)
	DEBUG=true $(BIN)/python manage.py migrate --no-input -v0
	DEBUG=true $(BIN)/python manage.py seed_demo
	DEBUG=true $(BIN)/python manage.py demo

test: $(STAMP) browser
	@$(MAKE) --no-print-directory test-sqlite
	@$(MAKE) --no-print-directory test-postgres

test-sqlite: $(STAMP)
	@echo "== Railyard suite on SQLite (embedded broker) =="
	RAILYARD_DEV=true RAILYARD_VAR_DIR=$(CURDIR)/var/test-sqlite $(BIN)/pytest

test-postgres: $(STAMP)
	@if $(BIN)/python -c "import psycopg,sys; psycopg.connect('postgresql://postgres@127.0.0.1:5432/postgres', connect_timeout=3).close()" 2>/dev/null; then \
		echo "== Railyard suite on PostgreSQL =="; \
		if $(BIN)/python -c "import redis; redis.Redis.from_url('$(REDIS_URL)', socket_timeout=2).ping()" 2>/dev/null; then \
			broker=$(REDIS_URL); echo "   (broker: Redis at $(REDIS_URL))"; \
		else broker=""; echo "   (broker: embedded; no Redis answered)"; fi; \
		RAILYARD_DEV=true RAILYARD_VAR_DIR=$(CURDIR)/var/test-postgres DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$$broker \
			$(BIN)/pytest --create-db; \
	else \
		echo "== SKIPPED the PostgreSQL pass: no server answered at 127.0.0.1:5432 =="; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH)

clean:
	rm -rf var/test-sqlite var/test-postgres
