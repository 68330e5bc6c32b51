# The two commands of README.md: `make run` (set up, then a short run) and `make test`.
VENV ?= .venv
AZR := $(VENV)/bin/azr

.PHONY: setup run test
setup:
	@bash scripts/setup.sh

run: setup
	$(AZR) train --preset cpu --iterations 2

test: setup
	$(VENV)/bin/python -m pytest -q
