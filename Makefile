# Switchyard: `make run` and `make test` set up .venv on first use, then do their job.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run demo serve test unit check bench prometheus clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Switchyard needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (first run only; the embedded redis-server may take a minute to build)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

run: demo  ## the service plus a simulator of the three workloads, on an embedded Redis

demo: $(STAMP)  ## a clinic day at x45 (observation 20 s, desk 4 s, station 6.7 s, SLA 20 s), lake rolled every 2 s and compacted every 20 s, doorbells due every 4 s
	SWITCHYARD_CLINIC_OBSERVATION_S=$${SWITCHYARD_CLINIC_OBSERVATION_S:-20} \
	SWITCHYARD_CLINIC_DESK_S=$${SWITCHYARD_CLINIC_DESK_S:-4} \
	SWITCHYARD_CLINIC_STATION_S=$${SWITCHYARD_CLINIC_STATION_S:-6.7} \
	SWITCHYARD_CLINIC_DESK_SLA_MS=$${SWITCHYARD_CLINIC_DESK_SLA_MS:-20000} \
	SWITCHYARD_DOORBELL_INTERVAL_S=$${SWITCHYARD_DOORBELL_INTERVAL_S:-4} \
	SWITCHYARD_MUSIC_ROLL_MS=$${SWITCHYARD_MUSIC_ROLL_MS:-2000} \
	SWITCHYARD_MUSIC_COMPACT_EVERY_S=$${SWITCHYARD_MUSIC_COMPACT_EVERY_S:-20} $(PY) -m router demo

serve: $(STAMP)  ## the service alone, no simulator
	$(PY) -m router run

TEST_WORKERS ?= 2  # the suite in this many processes: its tests mostly wait on servers

TEST_LOOP ?= asyncio  # the tests' own loop; TEST_LOOP=uvloop runs the suite on uvloop
test: check  ## lint, types, then the whole suite (real redis-server processes)
	SWITCHYARD_TEST_LOOP=$(TEST_LOOP) $(PY) -m pytest -n $(TEST_WORKERS)

unit: $(STAMP)
	$(PY) -m pytest -m "not integration"

check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

PROMETHEUS_PORT ?= 9090
prometheus:  ## a local Prometheus with the shipped alert rules, scraping make run's service
	prometheus --config.file=deploy/prometheus/local.yml --storage.tsdb.path=.switchyard/prometheus \
	    --web.listen-address=127.0.0.1:$(PROMETHEUS_PORT)

bench: $(STAMP)  ## the short benchmark suite (peers install into bench/.peers-venv on first use)
	$(PY) -m bench.suite --quick --json bench/results-quick.json $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .switchyard .pytest_cache .mypy_cache .ruff_cache *.egg-info
