# Two entry points on a fresh machine:
#   make run   - set up, then run the main job on its default configuration
#   make test  - set up, then run the whole test suite (what CI runs)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/datasets/monuseg
OUT ?= runs/demo

$(BIN)/nudiff: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/nudiff

setup: $(BIN)/nudiff

SEEDS ?= 0

run: setup
	$(BIN)/nudiff run --config configs/demo.yaml --data $(DATA) --out $(OUT) --set 'experiment.seeds=[$(SEEDS)]'

# make run SEEDS="0, 1, 2": three seeds (the cells of seed 0 are kept when OUT is the same)

test: setup
	$(BIN)/pytest -m "not slow" && $(BIN)/pytest -m slow

lint: setup
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/ruff check src tests benchmarks scripts

.PHONY: setup run test lint
