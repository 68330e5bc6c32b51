# Shared by the setup scripts (sourced): find a Python and make sure $VENV is a working venv.
# Needs VENV and TAG (the prefix of messages) set by the caller.

# ensure_venv MIN_MINOR: the first Python 3.MIN_MINOR+ with venv creates $VENV, or $VENV is
# recreated when its interpreter is gone (e.g. the Python it was built from was removed).
ensure_venv() {
  local min_minor=$1 candidate python=${PYTHON:-}
  usable() { "$1" -c "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, $min_minor))" >/dev/null 2>&1; }
  if [ -z "$python" ]; then
    for candidate in python3.11 python3.12 python3.13 python3 /usr/bin/python3.11 /usr/bin/python3; do
      if usable "$candidate"; then python=$candidate; break; fi
    done
  fi
  if [ -z "$python" ]; then
    echo "$TAG: error: no Python >= 3.$min_minor with venv found; install one (sudo apt-get install python3.11-venv)" >&2
    exit 1
  fi
  if [ -e "$VENV" ] && ! "$VENV/bin/python" -c "import sys" >/dev/null 2>&1; then
    echo "$TAG: $VENV has no working interpreter; recreating it"
    rm -rf "$VENV"
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "$TAG: creating $VENV with $($python --version)"
    "$python" -m venv "$VENV"
  fi
}
