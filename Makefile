# segbench: the two commands of a fresh machine are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SEGBENCH := $(BIN)/segbench
DEMO_DIR ?= demo

.PHONY: run test test-fast lint format venv bench gpu-wheels gpu-session-dry clean doctor

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
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not timing" --durations=30
	$(BIN)/python -m pytest -m timing --durations=10

# The inner loop: everything not marked slow (no real worker process, no browser, no
# bench script), on the same two pytest workers.
test-fast: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow and not timing" --durations=15

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

# The GPU session (bench/README.md): `make gpu-wheels` puts into .whl/ the cp312 wheels
# a bare GPU machine with torch lacks (segbench itself included); carry .whl there and
# run `bash bench/gpu_session.sh`. `make gpu-session-dry` runs every step on this CPU.
GPU_WHEELS = segmentation_models_pytorch==0.6.0 nibabel==5.4.2 pydantic==2.14.4 \
	pydantic_core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0 \
	typing-inspection==0.4.5 python-dotenv==1.2.4 SQLAlchemy==2.1.9 greenlet==3.5.6 \
	alembic==1.20.1 Mako==1.4.3 celery==5.7.0 kombu==5.7.0 billiard==4.3.2 vine==5.1.0 \
	amqp==5.4.2 click-didyoumean==0.3.1 click-plugins==1.1.1.2 click-repl==0.4.1 \
	prompt_toolkit==3.0.53 wcwidth==0.9.4 tzlocal==5.4.5 redis==8.2.0

gpu-wheels: venv
	rm -rf .whl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 -d .whl $(GPU_WHEELS)
	$(BIN)/pip wheel -q --no-deps -w .whl .
	du -sh .whl

gpu-session-dry: venv
	bash bench/gpu_session.sh --dry-run

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache test-output
