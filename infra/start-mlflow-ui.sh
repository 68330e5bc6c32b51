#!/usr/bin/env bash
# Start the MLflow UI on 127.0.0.1 (idempotent), one worker, over a tracking store.
#
#   infra/start-mlflow-ui.sh                       # runs/mlflow.db, artifacts in runs/mlartifacts
#   infra/start-mlflow-ui.sh path/to/mlflow.db     # another SQLite store (its mlartifacts beside it)
#   infra/start-mlflow-ui.sh postgresql://...      # any tracking URI
#
# Training runs write to a SQLite file beside their run directory (runs/<run>/ -> runs/mlflow.db),
# one experiment per preset, so this default shows every run started from this checkout.
# Port: AZR_MLFLOW_PORT (default 5000). Stop: infra/stop.sh mlflow
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
  -h | --help) azr_usage; exit 0 ;;
esac
[ $# -le 1 ] || { azr_usage >&2; exit 2; }
store=${1:-$AZR_ROOT/runs/mlflow.db}
artifacts=""
if [[ "$store" == *://* ]]; then
  uri=$store
  if [[ "$store" == sqlite:///* ]]; then
    artifacts="$(dirname "${store#sqlite://}")/mlartifacts"
  fi
else
  mkdir -p "$(dirname "$store")"
  db=$(cd "$(dirname "$store")" && pwd)/$(basename "$store")
  uri="sqlite:///$db"
  artifacts="$(dirname "$db")/mlartifacts"
fi

NAME="mlflow-ui"
URL="http://127.0.0.1:$AZR_MLFLOW_PORT"
# Training flows read this (address, then store) to link their MLflow runs (azr/pipeline/mlflow_run.py).
UI_RECORD="$AZR_STATE_DIR/mlflow-ui.url"
azr_init_state
pid=$(azr_running_pid "$NAME" "--port $AZR_MLFLOW_PORT")
if [ -n "$pid" ]; then
  azr_wait_http "$URL/health" "$pid" "$NAME"
  running_store=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n '/^--backend-store-uri$/{n;p;q}')
  [ -z "$running_store" ] || printf '%s\n%s\n' "$URL" "$running_store" >"$UI_RECORD"
  echo "MLflow UI already running: $URL (pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true))"
  echo "  (another store: stop it first with $AZR_ROOT/infra/stop.sh mlflow)"
  exit 0
fi
if azr_http_up "$URL/health"; then
  azr_die "port $AZR_MLFLOW_PORT is taken by a server this script did not start; pick another: AZR_MLFLOW_PORT=5001 $0 $*"
fi

mlflow=$(azr_bin mlflow)
args=(ui --backend-store-uri "$uri" --host 127.0.0.1 --port "$AZR_MLFLOW_PORT" --workers 1)
if [ -n "$artifacts" ]; then
  mkdir -p "$artifacts"
  args+=(--default-artifact-root "$artifacts" --artifacts-destination "$artifacts")
fi
pid=$(azr_start "$NAME" "$mlflow" "${args[@]}")
echo "starting MLflow UI (pid $pid, store $uri, log $AZR_LOG_DIR/$NAME.log) ..."
azr_wait_http "$URL/health" "$pid" "$NAME"
printf '%s\n%s\n' "$URL" "$uri" >"$UI_RECORD"
echo "MLflow UI up: $URL (pid $pid, store $uri${artifacts:+, artifacts $artifacts})"
echo "  stop it: $AZR_ROOT/infra/stop.sh mlflow"
