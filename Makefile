# edgec: `make demo` and `make test` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EDGEC := $(VENV)/bin/edgec
STAMP := $(VENV)/.installed
EXTRAS ?= dev,onnx,search,postgresql
DEMO := build/demo
SEED ?= 0
PYTEST_ARGS ?=

.PHONY: setup chromium demo test test-fast conformance lint bench clean

setup: $(STAMP)

# The dashboard's browser tests drive Debian's headless Chromium; they skip with the reason when it
# is missing, so this install is best effort (as root, where apt-get exists).
chromium:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then \
	  (apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) >/dev/null 2>&1 \
	  || echo "chromium not installed; the dashboard's browser tests will be skipped" >&2; fi

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: setup
	$(PY) -m edgec.examples --out $(DEMO) --arch cnn --epochs 30 --seed $(SEED)
	$(EDGEC) build $(DEMO)/digits_cnn.keras --target rpi5 --precision int8 --seed $(SEED) \
		--calib $(DEMO)/calib.npz --eval $(DEMO)/eval.npz --max-accuracy-drop 1.0 --out $(DEMO)/dist
	$(EDGEC) inspect $(DEMO)/dist/rpi5/model.tflite
	$(EDGEC) build $(DEMO)/digits_cnn.keras --target rpi5 --seed $(SEED) --fine-tune $(DEMO)/train.npz --prune 0.8 --qat \
		--eval $(DEMO)/eval.npz --max-accuracy-drop 1.0 --out $(DEMO)/dist-compressed

test: setup chromium
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup chromium
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# every Keras Applications family and a transformer block, int8, on each target kind (about an hour)
conformance: setup
	$(PY) -m pytest -m zoo tests/zoo $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check toolchain tests bench setup.py

bench: setup
	$(PY) bench/bench_build.py
	$(PY) bench/bench_agent.py

clean:
	rm -rf build dist .pytest_cache
