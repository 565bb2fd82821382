# The two commands a newcomer needs: `make demo` (the bridge on a simulated workload) and `make test`.
# Both set up everything they need on a fresh Debian machine and are quick when it is already there:
# the virtualenv is reinstalled only when pyproject.toml changes; Kafka's jars are fetched once into
# ~/.cache/tc-treeherder; RabbitMQ is installed from Debian's packages on first use.

PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-pyproject
# Extra pytest arguments: make test PYTEST_ARGS="-m 'not integration'"
PYTEST_ARGS ?=

.PHONY: test demo up down lint setup bench bench-treeherder faults

setup: $(STAMP)

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is missing: apt-get install -y python3 python3-venv" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "creating $(VENV) failed: apt-get install -y python3-venv" >&2; exit 1; }

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dev]'
	@cp pyproject.toml $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The main job: the local stack, the bridge and the simulator, watched live (see tc-treeherder demo --help).
DEMO := $(VENV)/bin/tc-treeherder demo
demo: $(STAMP)
	$(DEMO)

up: $(STAMP)
	$(VENV)/bin/tc-treeherder up

down: $(STAMP)
	$(VENV)/bin/tc-treeherder down

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The fault matrix (benchmarks/faults.py): each fault on a 20,000-event workload, jobs counted against the
# simulator's oracle; prints a table, writes bench-results/faults.json. FAULTS_ARGS="--faults sink-kill9 ..."
FAULTS_ARGS ?=
faults: $(STAMP)
	$(VENV)/bin/python -m benchmarks.faults $(FAULTS_ARGS)

# Every stage against its raw-client baseline, end to end, replay and backlog (docs/benchmarks.md).
# make bench BENCH_ARGS=--quick   (about two minutes; the last line gives the ratios)
BENCH_ARGS ?=
bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks.run $(BENCH_ARGS)
	$(VENV)/bin/python -m benchmarks.bench_treeherder $(BENCH_TREEHERDER_ARGS)

# The jobs ingester against process_job in a loop, in a local Treeherder (docs/treeherder.md#speed).
# make bench-treeherder BENCH_TREEHERDER_ARGS="--jobs 3000 --concurrency 2"
BENCH_TREEHERDER_ARGS ?=
bench-treeherder: $(STAMP)
	$(VENV)/bin/python -m benchmarks.bench_treeherder $(BENCH_TREEHERDER_ARGS)
