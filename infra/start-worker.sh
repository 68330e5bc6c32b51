#!/usr/bin/env bash
# Create work pool POOL if it is missing, then start a worker for it (idempotent).
#
#   infra/start-worker.sh azr-cpu                  # process pool, Prefect's default template
#   infra/start-worker.sh azr-gpu-process          # process pool, infra/work-pools/process-gpu.json
#   infra/start-worker.sh azr-gpu-docker           # docker pool (needs: pip install prefect-docker)
#   infra/start-worker.sh azr-gpu-kubernetes       # kubernetes pool (needs: pip install prefect-kubernetes)
#   infra/start-worker.sh --create-only POOL       # only create the pool (e.g. before `prefect deploy --all`)
#   infra/start-worker.sh --type process --template FILE POOL   # any other pool
#
# The pool type and template follow the name unless given: *docker* -> docker-gpu.json,
# *kubernetes*/*k8s* -> kubernetes-gpu.json, *gpu* -> process-gpu.json, else a plain process
# pool. The worker talks to PREFECT_API_URL (default: the local server of
# infra/start-prefect-server.sh) and exports AZR_PROJECT_DIR (default: this repository), which
# the pull step of prefect.yaml makes the flow runs' working directory. Stop: infra/stop.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

create_only=false
type=""
template=""
pool=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) azr_usage; exit 0 ;;
    --create-only) create_only=true ;;
    --type) type=${2:?--type needs a value}; shift ;;
    --template) template=${2:?--template needs a file}; shift ;;
    -*) azr_usage >&2; azr_die "unknown option $1" ;;
    *) [ -z "$pool" ] || azr_die "one pool at a time (got '$pool' and '$1')"; pool=$1 ;;
  esac
  shift
done
[ -n "$pool" ] || { azr_usage >&2; exit 2; }
[[ "$pool" =~ ^[A-Za-z0-9._-]+$ ]] || azr_die "pool name '$pool': use letters, digits, '.', '_' and '-'"

case "$pool" in
  *docker*) default_type=docker default_template=$AZR_ROOT/infra/work-pools/docker-gpu.json ;;
  *kubernetes* | *k8s*) default_type=kubernetes default_template=$AZR_ROOT/infra/work-pools/kubernetes-gpu.json ;;
  *gpu*) default_type=process default_template=$AZR_ROOT/infra/work-pools/process-gpu.json ;;
  *) default_type=process default_template="" ;;
esac
if [ -z "$type" ]; then
  type=$default_type
  template=${template:-$default_template}
fi
[ -z "$template" ] || [ -f "$template" ] || azr_die "template $template not found"
azr_init_state
prefect=$(azr_bin prefect)
python=$(azr_bin python)

azr_http_up "${PREFECT_API_URL%/}/health" ||
  azr_die "no Prefect API at $PREFECT_API_URL; start one with $AZR_ROOT/infra/start-prefect-server.sh (or export PREFECT_API_URL)"

if "$prefect" --no-prompt work-pool inspect "$pool" >/dev/null 2>&1; then
  echo "work pool $pool exists"
else
  args=(--no-prompt work-pool create "$pool" --type "$type")
  if [ -n "$template" ]; then
    if [ "$type" = docker ]; then
      # Per-GPU limits must be named after the Docker host, not the container: make this
      # host's name the default of gpu_host (a pool per GPU host).
      filled="$AZR_STATE_DIR/$pool-template.json"
      "$python" - "$template" "$filled" "$(hostname)" <<'PY'
import json, sys
src, dst, host = sys.argv[1:]
template = json.load(open(src))
template["variables"]["properties"]["gpu_host"]["default"] = host
json.dump(template, open(dst, "w"), indent=2)
PY
      template=$filled
    fi
    args+=(--base-job-template "$template")
  fi
  "$prefect" "${args[@]}" >/dev/null || azr_die "could not create work pool $pool (type $type)"
  echo "created work pool $pool (type $type${template:+, template $template})"
fi
$create_only && exit 0

name="worker-$pool"
marker="worker start --pool $pool"
pid=$(azr_running_pid "$name" "$marker")
if [ -n "$pid" ]; then
  echo "worker for $pool already running (pid $pid, log $AZR_LOG_DIR/$name.log)"
  echo "  stop it: $AZR_ROOT/infra/stop.sh worker $pool"
  exit 0
fi
case "$type" in
  docker) "$python" -c 'import prefect_docker' 2>/dev/null || azr_die "a docker worker needs prefect-docker: $python -m pip install prefect-docker" ;;
  kubernetes) "$python" -c 'import prefect_kubernetes' 2>/dev/null || azr_die "a kubernetes worker needs prefect-kubernetes: $python -m pip install prefect-kubernetes" ;;
esac

export AZR_PROJECT_DIR=${AZR_PROJECT_DIR:-$AZR_ROOT}
# Flow runs inherit the worker's environment: `python`, `accelerate`, `azr` in job commands are
# the project's.
[ ! -d "$AZR_VENV/bin" ] || export PATH="$AZR_VENV/bin:$PATH"
log="$AZR_LOG_DIR/$name.log"
start_line=1
[ ! -f "$log" ] || start_line=$(($(wc -l <"$log") + 1))
cd "$AZR_PROJECT_DIR" || azr_die "AZR_PROJECT_DIR=$AZR_PROJECT_DIR is not a directory"
pid=$(azr_start "$name" "$prefect" worker start --pool "$pool" --type "$type" --name "azr-$(hostname)-$pool")
deadline=$((SECONDS + AZR_START_TIMEOUT))
until tail -n "+$start_line" "$log" | grep -c "started!" >/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 30 "$log" >&2
    azr_die "worker for $pool (pid $pid) exited during start-up; log: $log"
  fi
  ((SECONDS < deadline)) || azr_die "worker for $pool (pid $pid) not started after ${AZR_START_TIMEOUT}s; log: $log"
  sleep 0.5
done
echo "worker for $pool started (pid $pid, type $type, API $PREFECT_API_URL, AZR_PROJECT_DIR=$AZR_PROJECT_DIR)"
echo "  log:     $log"
echo "  stop it: $AZR_ROOT/infra/stop.sh worker $pool   (all: $AZR_ROOT/infra/stop.sh)"
