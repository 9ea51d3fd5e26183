# One-command entry points. Each installs the locked stack on first use.
PYTHON ?= python3.11
VENV ?= .venv
DATA ?= ../shared/data/cats_vs_dogs
# Offline ImageNet weights (a folder of Keras weight files); "imagenet" downloads them.
WEIGHTS ?= $(if $(wildcard ../shared/weights),../shared/weights,imagenet)
OUTPUT ?= outputs
BIN = $(VENV)/bin

.PHONY: install run test test-fast bench clean image

install: $(VENV)/.installed

# tfx 1.16 declares Requires-Python <3.11, yet every wheel it needs exists for
# 3.11; the lock is a full resolution, so --no-deps installs it without backtracking.
# uv installs the same lock in seconds (pip: minutes); pip is the fallback
# when uv cannot be had, with the same versions either way.
UV_VERSION ?= 0.13.9
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if $(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION); then \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -r requirements.lock && \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .; \
	else \
	  $(BIN)/pip install --quiet --ignore-requires-python --no-deps -r requirements.lock && \
	  $(BIN)/pip install --quiet --no-deps --no-build-isolation -e .; \
	fi
	touch $@

run: install
	$(BIN)/finetune run --data-root $(DATA) --weights $(WEIGHTS) --outputs $(OUTPUT) $(ARGS)

# Tests run on every core (pytest-xdist); each file's tests stay on one worker,
# so a module's shared run is made once.
TEST_WORKERS ?= auto
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

# The edit-test loop: everything but whole pipeline runs (tests marked slow).
test-fast: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow" $(ARGS)

bench: install
	$(BIN)/python bench/ingest.py $(DATA)
	$(BIN)/python bench/train.py $(DATA) $(WEIGHTS)

clean:
	rm -rf $(VENV) $(OUTPUT)

# The Kubeflow image (deploy/kubeflow/Dockerfile), from the same requirements.lock as
# wheels built here (build/wheelhouse): docker build when a Docker engine answers,
# else buildah on a debootstrap base (apt-get install buildah debootstrap). BASE_IMAGE=...
# picks another Python 3.11 bookworm base; `make image WEIGHTS=folder` bakes that folder's
# Keras weight files into /opt/finetune/weights (only when WEIGHTS is given here).
# See deploy/kubeflow/README.md.
IMAGE ?= finetune:latest
IMAGE_WEIGHTS = $(if $(filter command line environment,$(origin WEIGHTS)),$(WEIGHTS))
image:
	deploy/kubeflow/build-image.sh $(IMAGE) $(IMAGE_WEIGHTS)
