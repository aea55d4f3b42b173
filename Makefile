# segbench: the two commands of a fresh machine are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SEGBENCH := $(BIN)/segbench
DEMO_DIR ?= demo

.PHONY: run test test-fast lint format venv bench clean doctor

$(BIN)/segbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/segbench

venv: $(BIN)/segbench

# The main job on embedded defaults (SQLite + in-process broker + local worker +
# dashboard on 127.0.0.1:8501), filled with generated stand-in data. `segbench up`
# prints `segbench doctor --short` (what is not ok, with the fix) before it starts.
run: venv
	$(SEGBENCH) up --demo --dir $(DEMO_DIR)

# Two pytest workers, each module whole to one (`--dist loadfile`: its module
# fixtures, trained models, are built once; queue tests start redis-servers of their
# own, so none shares a broker); then the tests that assert a wall-clock
# bound (marked `timing`: recovery within 60 s) alone, with the machine to themselves.
# TEST_WORKERS=0 runs the first part serially.
TEST_WORKERS ?= 2

test: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not timing"
	$(BIN)/python -m pytest -m timing

test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

# Everything a run needs, as one table (exit 1 only for what stops every run).
doctor: venv
	$(SEGBENCH) doctor

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv
	$(BIN)/python bench/harness_overhead.py --quick
	$(BIN)/python bench/dashboard_queries.py --quick

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache test-output
