# The two commands of README.md: `make run` (set up, then a short run) and `make test`.
VENV ?= .venv
AZR := $(VENV)/bin/azr

.PHONY: setup run test
setup:
	@bash scripts/setup.sh

run: setup
	$(AZR) prompts build --preset cpu --out runs/cpu-prompts --force

test: setup
	$(VENV)/bin/python -m pytest -q
