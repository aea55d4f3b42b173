# segbench: the two commands of a fresh machine are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SEGBENCH := $(BIN)/segbench
DEMO_DIR ?= demo

.PHONY: run test test-fast lint format venv bench clean doctor

# The first install downloads PyTorch with its CUDA libraries: several GB (the venv
# measured 6.9 GB on disk), minutes of pip; pip shows each package as it comes.
$(BIN)/segbench: pyproject.toml
	@echo "segbench: creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "segbench: installing the project and its dependencies into $(VENV): torch 2.14.1"
	@echo "  with its CUDA libraries, torchvision, segmentation-models-pytorch, timm, Streamlit,"
	@echo "  Celery, SQLAlchemy, nibabel, SciPy and the test tools. Several GB to download"
	@echo "  (about 7 GB on disk): a few minutes on a fast connection, up to half an hour on"
	@echo "  a slow one. Later runs skip this step."
	$(BIN)/pip install --progress-bar on -e '.[dev]'
	@echo "segbench: installed; \`. $(VENV)/bin/activate\` puts the segbench command on PATH"
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
