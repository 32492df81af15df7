# hvdkit — every target sets up what it needs first (launch/setup.sh is quick once done).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup setup-ray demo test test-unit test-integration test-gpu bench bench-gpu lint docs

setup:
	@bash launch/setup.sh

# Optional: Ray, for `hvdkit train --launcher ray` (Horovod's RayExecutor; checked with Ray 2.60).
setup-ray: setup
	$(BIN)/python -m pip install -q "ray>=2.10,<3"
	$(BIN)/python -c "import ray, horovod.ray; print('[setup] Ray', ray.__version__, 'ready')"

# The main job: a real 2-rank data-parallel run of the digits recipe, PyTorch then TensorFlow.
demo: setup
	$(BIN)/hvdkit train recipes/digits_mlp.yaml --framework torch -np 2
	$(BIN)/hvdkit train recipes/digits_mlp.yaml --framework tensorflow -np 2

test: setup
	$(BIN)/ruff check hvdkit tests benchmarks
	$(BIN)/python -m pytest -q -rs tests

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

test-integration: setup
	$(BIN)/python -m pytest -q tests/integration

test-gpu: setup  # on a GPU host; skipped without CUDA
	$(BIN)/python -m pytest -q -rs tests/gpu

bench: setup
	$(BIN)/python benchmarks/run_all.py

# On a GPU host: ResNet-50 in fp32, bf16 and bf16 + compile + channels-last, hvdkit against a
# plain PyTorch loop (benchmarks/gpu_precision.py; about 5 minutes).
bench-gpu: setup
	$(BIN)/python benchmarks/gpu_precision.py

# The documentation site (docs/, mkdocs.yml) into site/: strict (a broken link or reference
# fails) and offline. Material for MkDocs and mkdocstrings are installed into .venv when missing.
docs: setup
	$(BIN)/python -c "import material, mkdocstrings_handlers.python" 2>/dev/null || \
		$(BIN)/python -m pip install -q mkdocs-material "mkdocstrings[python]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/ruff check hvdkit tests benchmarks
