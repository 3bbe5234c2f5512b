# Set-up, tests, demo and the real run. Everything runs from the project's .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rule scripts run as `python`: make that the environment's interpreter.
export PATH := $(CURDIR)/$(BIN):$(PATH)
CORES ?= all
WHEEL := .cache/wheels/object_detection-0.0.3-py3-none-any.whl

.PHONY: help venv wheels test lint demo run clean-demo

help:
	@echo "make test   - set up .venv and run the test suite (offline once set up)"
	@echo "make demo   - the whole workflow offline on generated data (demo/)"
	@echo "make run    - the whole workflow on COCO val2017 and Intel's graphs (needs internet)"
	@echo "make lint   - snakemake --lint and snakefmt --check"

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

# The tensorflow/models stand-in of the demo and tests is built from this PyPI snapshot.
$(WHEEL): | $(BIN)/.installed
	$(BIN)/python -m pip download --quiet --no-deps --dest .cache/wheels object-detection==0.0.3

wheels: $(WHEEL)

test: venv wheels
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakefmt --check .

demo: venv wheels
	$(BIN)/python scripts/run_demo.py --cores $(CORES)

run: venv
	$(BIN)/snakemake --cores $(CORES)

clean-demo:
	rm -rf demo
