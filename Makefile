# The two set-up commands are `make run` and `make test` (see README.md). Both create the
# virtual environment and install the pinned requirements on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run scale ps logs restart test manage install clean-data bench soak saturation parity help

run: $(STAMP)  ## Run the whole formation on the embedded servers (or on the *_URL variables you set)
	$(PY) -m embedded run $(if $(CONCURRENCY),--concurrency $(CONCURRENCY))

# Operating a running `make run` (embedded/control.py); none of these installs anything.
# `make scale worker=3 mailer=2`: make's command-line variables are the types and their counts.
scale:  ## Change the running formation: make scale worker=3 mailer=2 (other types untouched)
	@$(PY) -m embedded scale $(MAKEOVERRIDES)

ps:  ## List the running formation's processes: type.index, pid, state, uptime, RSS, restarts
	@$(PY) -m embedded ps

logs:  ## Follow the log of one process type (make logs worker), or of every type (make logs)
	@$(PY) -m embedded logs $(TYPE)

restart:  ## Restart one process type: make restart web (gunicorn's graceful reload), make restart worker
	@$(PY) -m embedded restart $(TYPE)

# `make logs worker`, `make restart web`: the word after the target is its TYPE, not a goal.
ifneq ($(filter logs restart,$(firstword $(MAKECMDGOALS))),)
TYPE ?= $(word 2,$(MAKECMDGOALS))
ifneq ($(word 2,$(MAKECMDGOALS)),)
$(eval $(word 2,$(MAKECMDGOALS)):;@:)
endif
endif

test: $(STAMP)  ## Lint, then run the test suite against its own embedded servers
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	bash tests/browser/ensure-chromium
	$(PY) -m embedded test -- $(VENV)/bin/pytest $(PYTEST_ARGS)

manage: $(STAMP)  ## One-off command with the shop's configuration: make manage ARGS=createsuperuser
	$(PY) -m embedded exec -- $(PY) manage.py $(ARGS)

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or set PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(PY) || { echo "formation: creating the virtual environment $(VENV)/"; $(PYTHON) -m venv $(VENV); }
	@$(PY) -m embedded.install requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

clean-data:  ## Delete the embedded servers' data (stop `make run` first)
	rm -rf .formation .env

bench: $(STAMP)  ## Benchmarks against same-run floors (bench/run.py): one table, written to BENCHMARKS.md
	bash bench/ensure-wrk
	$(PY) -m embedded test -- $(PY) bench/run.py $(BENCH_ARGS)

# Seconds of chaos, and its seed (random when empty; printed, so a failure can be replayed).
SOAK_SECONDS ?= 120
SOAK_SEED ?=
soak: $(STAMP)  ## Soak: shoppers order while processes, PostgreSQL, Redis and SMTP break at random; ledger check (SOAK_SECONDS=120 SOAK_SEED=n)
	$(PY) bench/soak.py --seconds $(SOAK_SECONDS) $(if $(SOAK_SEED),--seed $(SOAK_SEED)) $(SOAK_ARGS)

# Seconds another client holds 110 of PostgreSQL's 200 slots, in each of the two runs.
SATURATION_SECONDS ?= 150
saturation: $(STAMP)  ## Saturation: orders while another client holds most PostgreSQL slots, direct vs through PgBouncer; one table
	$(PY) -m embedded test -- $(PY) bench/saturation.py --seconds $(SATURATION_SECONDS) $(SATURATION_ARGS)

parity: $(STAMP)  ## Parity report: services in use vs versions pinned in compose and Kubernetes
	$(PY) -m embedded exec -- $(PY) manage.py parity $(ARGS)

# Last, not the default goal: `make` alone runs the shop (run, the first target), as it always has.
help:  ## List the targets and what each does
	@awk 'BEGIN { FS = ":.*## " } /^[a-z-]+:.*## / { printf "  make %-11s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
