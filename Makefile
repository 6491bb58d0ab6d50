# edgec: `make demo` and `make test` each set up everything they need on a fresh machine.
# Times on the 2-core development machine: make setup ~2 min (TensorFlow, TF-MOT, LiteRT, ONNX,
# Optuna...), make demo ~1.5 min after it, make test ~25 min, make docs ~15 s, make lint ~10 s
# (its own small venv: no TensorFlow).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EDGEC := $(VENV)/bin/edgec
STAMP := $(VENV)/.installed
EXTRAS ?= dev,onnx,search,postgresql
DEMO := build/demo
SEED ?= 0
PYTEST_ARGS ?=

.PHONY: setup chromium demo test test-fast conformance lint docs bench clean
LINT_VENV ?= .venv-lint

setup: $(STAMP)

# The dashboard's browser tests drive Debian's headless Chromium; they skip with the reason when it
# is missing, so this install is best effort (as root, where apt-get exists).
chromium:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then \
	  (apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) >/dev/null 2>&1 \
	  || echo "chromium not installed; the dashboard's browser tests will be skipped" >&2; fi

$(STAMP): pyproject.toml constraints.txt
	@echo "==> setup 1/3: the virtual environment $(VENV) ($(PYTHON))"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "==> setup 2/3: pip"
	$(PY) -m pip install --quiet --upgrade pip
	@echo "==> setup 3/3: edgec with extras [$(EXTRAS)] and its dependencies, pinned by constraints.txt"
	@echo "    (TensorFlow, tf-keras, TF-MOT, LiteRT, tf2onnx, ONNX Runtime, Optuna, FastAPI, psycopg:"
	@echo "    about 2 minutes on a fresh machine; pip prints each package as it goes)"
	$(PY) -m pip install --progress-bar off -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)
	@echo "==> setup done: . $(VENV)/bin/activate"

demo: setup
	$(PY) -m edgec.examples --out $(DEMO) --arch cnn --epochs 30 --seed $(SEED)
	$(EDGEC) build $(DEMO)/digits_cnn.keras --target rpi5 --precision int8 --seed $(SEED) \
		--calib $(DEMO)/calib.npz --eval $(DEMO)/eval.npz --max-accuracy-drop 1.0 --out $(DEMO)/dist
	$(EDGEC) inspect $(DEMO)/dist/rpi5/model.tflite
	$(EDGEC) build $(DEMO)/digits_cnn.keras --target rpi5 --seed $(SEED) --fine-tune $(DEMO)/train.npz --prune 0.8 --qat \
		--eval $(DEMO)/eval.npz --max-accuracy-drop 1.0 --out $(DEMO)/dist-compressed

# about 25 min on 2 cores, slow tests included; test-fast skips the slow ones
test: setup chromium
	@echo "==> the test suite: about 25 minutes on 2 cores (make test-fast skips the slow tests)"
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup chromium
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# every Keras Applications family and a transformer block, int8, on each target kind (about an hour)
conformance: setup
	$(PY) -m pytest -m zoo tests/zoo $(PYTEST_ARGS)

# ruff and import-linter from their own small venv: linting installs no TensorFlow
$(LINT_VENV)/.installed: requirements-lint.txt
	@echo "==> lint tools into $(LINT_VENV) (requirements-lint.txt: ruff, import-linter)"
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet --progress-bar off -r requirements-lint.txt
	touch $@

lint: $(LINT_VENV)/.installed
	$(LINT_VENV)/bin/ruff check toolchain tests bench setup.py docs/hooks.py
	@if grep -q '^\[tool.importlinter\]' pyproject.toml; then \
	  echo "==> lint-imports (the layer contracts in pyproject.toml)"; \
	  PYTHONPATH=toolchain $(LINT_VENV)/bin/lint-imports; fi

# the documentation site (mkdocs.yml, docs/): tools pinned in requirements-docs.txt, into $(VENV)
$(VENV)/.docs-installed: requirements-docs.txt $(STAMP)
	@echo "==> documentation tools into $(VENV) (requirements-docs.txt)"
	$(PY) -m pip install --quiet --progress-bar off -c constraints.txt -r requirements-docs.txt
	touch $@

docs: setup $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: setup
	$(PY) bench/bench_build.py
	$(PY) bench/bench_agent.py

clean:
	rm -rf build dist .pytest_cache
