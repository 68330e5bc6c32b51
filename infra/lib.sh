# Shared by the infra/ scripts (source it, do not run it): paths, pid files, starting and
# stopping background services by process id, waiting for an HTTP health check.
#
# Every service runs in a session of its own (setsid), its pid in $AZR_STATE_DIR/pids/NAME.pid
# and its output in $AZR_STATE_DIR/logs/NAME.log, so stopping it never needs a name match.
#
# Settings (environment):
#   AZR_STATE_DIR      pids, logs, PREFECT_HOME, env.sh          default: <repo>/.azr-state
#   AZR_PREFECT_HOME   PREFECT_HOME of the local server/workers  default: $AZR_STATE_DIR/prefect-home
#   AZR_PREFECT_PORT   port of the local Prefect server          default: 4200
#   AZR_MLFLOW_PORT    port of the MLflow UI                     default: 5000
#   AZR_VENV           virtual environment with prefect/mlflow   default: <repo>/.venv (else PATH)
#   AZR_START_TIMEOUT  seconds to wait for a service to be up    default: 180
#   PREFECT_API_URL    Prefect API for workers                   default: the local server's

set -euo pipefail

AZR_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AZR_STATE_DIR=${AZR_STATE_DIR:-$AZR_ROOT/.azr-state}
AZR_PID_DIR=$AZR_STATE_DIR/pids
AZR_LOG_DIR=$AZR_STATE_DIR/logs
AZR_PREFECT_PORT=${AZR_PREFECT_PORT:-4200}
AZR_MLFLOW_PORT=${AZR_MLFLOW_PORT:-5000}
AZR_START_TIMEOUT=${AZR_START_TIMEOUT:-180}
AZR_VENV=${AZR_VENV:-$AZR_ROOT/.venv}
AZR_LOCAL_API_URL="http://127.0.0.1:$AZR_PREFECT_PORT/api"

export PREFECT_HOME=${AZR_PREFECT_HOME:-$AZR_STATE_DIR/prefect-home}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_API_URL=${PREFECT_API_URL:-$AZR_LOCAL_API_URL}

azr_die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
}

# The path of a command, preferring the project's virtual environment.
azr_bin() {
  if [ -x "$AZR_VENV/bin/$1" ]; then
    echo "$AZR_VENV/bin/$1"
  elif command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
  else
    azr_die "'$1' not found in $AZR_VENV/bin or on PATH; run 'make setup' (or set AZR_VENV)"
  fi
}

azr_init_state() {
  mkdir -p "$AZR_PID_DIR" "$AZR_LOG_DIR" "$PREFECT_HOME"
  # The state directory ignores itself, so it never shows up in `git status`.
  [ -f "$AZR_STATE_DIR/.gitignore" ] || echo '*' >"$AZR_STATE_DIR/.gitignore"
}

# The pid of service NAME if its pid file names a live process whose command line contains
# MARKER (so a recycled pid is not mistaken for the service); nothing otherwise.
azr_running_pid() {
  local name=$1 marker=$2 file="$AZR_PID_DIR/$1.pid" pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  local cmdline
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  if [[ "$cmdline" == *"$marker"* ]]; then
    echo "$pid"
  fi
}

# Start CMD... as service NAME in a session of its own; print its pid. The process writes its
# pid file itself right before it becomes CMD, so the file is exact. Signals are reset first:
# a background job of a non-interactive shell ignores SIGINT, and a Prefect worker stops on
# SIGTERM by sending itself SIGINT, so without the reset it would never stop.
azr_start() {
  local name=$1
  shift
  local pidfile="$AZR_PID_DIR/$name.pid" log="$AZR_LOG_DIR/$name.log" py
  py=$(azr_bin python)
  rm -f "$pidfile"
  echo "==== $(date -u '+%Y-%m-%dT%H:%M:%SZ') starting: $*" >>"$log"
  "$py" -c '
import os, signal, sys
if os.getpid() == os.getpgrp() and os.fork():  # a group leader cannot start a session
    os._exit(0)
os.setsid()
for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_DFL)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
os.execvp(sys.argv[2], sys.argv[2:])
' "$pidfile" "$@" >>"$log" 2>&1 </dev/null &
  for _ in $(seq 1 200); do
    [ -s "$pidfile" ] && break
    sleep 0.05
  done
  [ -s "$pidfile" ] || azr_die "$name did not start; see $log"
  cat "$pidfile"
}

# Wait until URL answers 200, or fail (showing the log) if PID exits or the timeout passes.
azr_wait_http() {
  local url=$1 pid=$2 name=$3 deadline=$((SECONDS + AZR_START_TIMEOUT)) py
  py=$(azr_bin python)
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$AZR_LOG_DIR/$name.log" >&2 || true
      azr_die "$name (pid $pid) exited during start-up; log: $AZR_LOG_DIR/$name.log"
    fi
    if "$py" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url" 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  azr_die "$name (pid $pid) not healthy at $url after ${AZR_START_TIMEOUT}s; log: $AZR_LOG_DIR/$name.log (stop it: $AZR_ROOT/infra/stop.sh)"
}

# True if something answers at URL.
azr_http_up() {
  "$(azr_bin python)" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
}

# Stop service NAME: SIGTERM to its pid, then to its session's process group, SIGKILL after
# TIMEOUT seconds. Prints what it did; quiet if the service is not running.
azr_stop() {
  local name=$1 marker=$2 timeout=${3:-30} pid
  pid=$(azr_running_pid "$name" "$marker")
  if [ -z "$pid" ]; then
    rm -f "$AZR_PID_DIR/$name.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((timeout * 2))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  # Children that outlived their parent (flow-run processes of a killed worker) share its group.
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 10); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped $name (pid $pid; killed after ${timeout}s)"
  else
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$AZR_PID_DIR/$name.pid"
}

# Print the comment block at the top of the calling script (its usage text).
azr_usage() {
  sed -n '2,/^[^#]/p' "$0" | sed -n 's/^# \{0,1\}//p'
}
