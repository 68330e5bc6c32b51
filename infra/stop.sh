#!/usr/bin/env bash
# Stop what the infra/ scripts started, by the process ids in .azr-state/pids/.
#
#   infra/stop.sh                  # every worker, then the MLflow UI, then the Prefect server
#   infra/stop.sh worker [POOL]    # the worker of POOL (default: every worker)
#   infra/stop.sh mlflow           # the MLflow UI
#   infra/stop.sh server           # the Prefect server (stop its workers first, or they hang)
#
# Workers go before the server: a worker whose server is gone hangs in its shutdown.
# A stopping worker ends the flow-run processes it started: let runs finish or cancel them first.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_workers() {
  local only=${1:-} file name stopped=0
  shopt -s nullglob
  for file in "$AZR_PID_DIR"/worker-*.pid; do
    name=$(basename "$file" .pid)
    [ -z "$only" ] || [ "$name" = "worker-$only" ] || continue
    azr_stop "$name" "worker start --pool ${name#worker-}" 30
    stopped=1
  done
  [ "$stopped" = 1 ] || echo "no worker${only:+ for $only} running"
}
stop_mlflow() {
  [ -n "$(azr_running_pid mlflow-ui --backend-store-uri)" ] || { echo "MLflow UI not running"; rm -f "$AZR_PID_DIR/mlflow-ui.pid" "$AZR_STATE_DIR/mlflow-ui.url"; return 0; }
  azr_stop mlflow-ui --backend-store-uri 20
  rm -f "$AZR_STATE_DIR/mlflow-ui.url"
}
stop_server() {
  [ -n "$(azr_running_pid prefect-server 'server start')" ] || { echo "Prefect server not running"; rm -f "$AZR_PID_DIR/prefect-server.pid"; return 0; }
  azr_stop prefect-server "server start" 30
}

case "${1:-all}" in
  -h | --help) azr_usage ;;
  all) stop_workers; stop_mlflow; stop_server ;;
  worker | workers) stop_workers "${2:-}" ;;
  mlflow) stop_mlflow ;;
  server) stop_server ;;
  *) azr_usage >&2; exit 2 ;;
esac
