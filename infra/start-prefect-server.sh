#!/usr/bin/env bash
# Start a local Prefect server on 127.0.0.1 (idempotent) with its own PREFECT_HOME under
# .azr-state/, wait until it is healthy, and write .azr-state/env.sh for other shells.
#
#   infra/start-prefect-server.sh          # port 4200 (AZR_PREFECT_PORT)
#   source .azr-state/env.sh               # PREFECT_HOME / PREFECT_API_URL for `prefect ...`
#   infra/stop.sh                          # stops workers, the MLflow UI, then this server
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
  -h | --help) azr_usage; exit 0 ;;
  "") ;;
  *) azr_usage >&2; exit 2 ;;
esac
NAME="prefect-server"
MARKER="server start --host 127.0.0.1 --port $AZR_PREFECT_PORT"
URL="http://127.0.0.1:$AZR_PREFECT_PORT"
azr_init_state

write_env() {
  cat >"$AZR_STATE_DIR/env.sh" <<ENV
# Written by infra/start-prefect-server.sh: \`source $AZR_STATE_DIR/env.sh\`
export PREFECT_HOME="$PREFECT_HOME"
export PREFECT_API_URL="$URL/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export AZR_PROJECT_DIR="\${AZR_PROJECT_DIR:-$AZR_ROOT}"
ENV
}

pid=$(azr_running_pid "$NAME" "$MARKER")
if [ -n "$pid" ]; then
  azr_wait_http "$URL/api/health" "$pid" "$NAME"
  write_env
  echo "Prefect server already running: $URL (pid $pid)"
  echo "  use it:  source $AZR_STATE_DIR/env.sh"
  echo "  stop it: $AZR_ROOT/infra/stop.sh server   (stop workers first: $AZR_ROOT/infra/stop.sh)"
  exit 0
fi
if azr_http_up "$URL/api/health"; then
  azr_die "port $AZR_PREFECT_PORT already serves a Prefect API that this script did not start; use it (PREFECT_API_URL=$URL/api) or pick another port: AZR_PREFECT_PORT=4300 $0"
fi

prefect=$(azr_bin prefect)
# No UI build step to wait for when nobody opens it: set AZR_PREFECT_UI=false.
export PREFECT_UI_ENABLED=${AZR_PREFECT_UI:-true}
pid=$(azr_start "$NAME" "$prefect" server start --host 127.0.0.1 --port "$AZR_PREFECT_PORT")
echo "starting Prefect server (pid $pid, PREFECT_HOME=$PREFECT_HOME, log $AZR_LOG_DIR/$NAME.log) ..."
azr_wait_http "$URL/api/health" "$pid" "$NAME"
write_env
echo "Prefect server up: $URL (pid $pid)"
echo "  use it:  source $AZR_STATE_DIR/env.sh   (sets PREFECT_HOME and PREFECT_API_URL)"
echo "  stop it: $AZR_ROOT/infra/stop.sh   (stops workers first, then the server)"
