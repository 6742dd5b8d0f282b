#!/usr/bin/env bash
# Cloud TPU VM slice (pod) driver for r1v2_jax: create or reuse the slice, install the code
# on every worker, run `r1v2 train` on all workers at once (jax.distributed.initialize()
# needs no arguments on TPU), stream logs, tear down. See launch/README.md.
set -euo pipefail

PROG=tpu_pod.sh
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$SCRIPT_DIR")
# shellcheck source=launch/common.sh
source "$SCRIPT_DIR/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh [OPTIONS] COMMAND [-- ARGS...]

Commands:
  create      create the TPU VM slice, or reuse it when it already exists (same type)
  install     ship `git archive REF` of this repository to every worker, install it in a venv
  up          create, then install
  check       print process index / device counts from jax on every worker
  train       run `r1v2 train ARGS...` on every worker (ARGS after --; needs --workdir)
  run         run the shell command ARGS... on every worker, in the code folder, venv active
  logs        follow the remote log of a --detach'ed run (one worker; Ctrl-C to stop)
  kill        stop a --detach'ed run on every worker
  status      describe the slice
  stop        stop the slice's VMs (Cloud TPU may refuse this for multi-host slices)
  delete      delete the slice

Options (environment variable in brackets):
  --name NAME              TPU name, required [R1V2_TPU_NAME]
  --zone ZONE              zone, required, e.g. us-east5-a [R1V2_TPU_ZONE]
  --project PROJECT        GCP project (default: gcloud's configured one) [R1V2_GCP_PROJECT]
  --accelerator-type TYPE  slice type (default v5p-128) [R1V2_TPU_TYPE]
  --version VERSION        TPU runtime (default from the type: v4 tpu-ubuntu2204-base,
                           v5p v2-alpha-tpuv5, v5litepod v2-alpha-tpuv5-lite,
                           v6e v2-alpha-tpuv6e) [R1V2_TPU_VERSION]
  --spot | --reserved      capacity type for create (default on-demand)
  --ref REF                git ref shipped by install (default HEAD) [R1V2_GIT_REF]
  --python VERSION         Python of the workers' venv, installed by uv (default 3.11) [R1V2_PYTHON]
  --extras EXTRAS          pip extras installed with the package (default tpu) [R1V2_EXTRAS]
  --remote-dir DIR         code folder under the workers' home (default r1v2) [R1V2_REMOTE_DIR]
  --venv DIR               venv folder under the workers' home (default r1v2-venv) [R1V2_REMOTE_VENV]
  --env KEY=VALUE          exported on the workers before run/train/check (repeatable)
  --detach                 train: start in the background on the workers (survives ssh loss)
  --run-name NAME          name of a detached run's remote log/pid (default train) [R1V2_RUN_NAME]
  --worker N               worker followed by logs (default 0)
  --log-dir DIR            local logs: DIR/NAME/<UTC time>-<command>.log
                           (default runs/launch-logs) [R1V2_LOG_DIR]
  --allow-local-workdir    accept a train --workdir that is not gs:// (e.g. a shared mount)
  --dry-run                print every command ("+ " prefix) and execute nothing
  -h, --help               this help

Example:
  launch/tpu_pod.sh --name r1v2-pod --zone us-east5-a up
  launch/tpu_pod.sh --name r1v2-pod --zone us-east5-a --detach train -- \
      --config configs/mpo_38b.py --workdir gs://my-bucket/runs/mpo
  launch/tpu_pod.sh --name r1v2-pod --zone us-east5-a logs
EOF
}

NAME=${R1V2_TPU_NAME:-}
ZONE=${R1V2_TPU_ZONE:-}
PROJECT=${R1V2_GCP_PROJECT:-}
ACCELERATOR=${R1V2_TPU_TYPE:-v5p-128}
VERSION=${R1V2_TPU_VERSION:-}
CAPACITY=""
REF=${R1V2_GIT_REF:-HEAD}
PYTHON_VERSION=${R1V2_PYTHON:-3.11}
EXTRAS=${R1V2_EXTRAS:-tpu}
REMOTE_DIR=${R1V2_REMOTE_DIR:-r1v2}
REMOTE_VENV=${R1V2_REMOTE_VENV:-r1v2-venv}
RUN_NAME=${R1V2_RUN_NAME:-train}
LOG_DIR=${R1V2_LOG_DIR:-runs/launch-logs}
WORKER=0
DETACH=0
ALLOW_LOCAL_WORKDIR=0
DRY_RUN=0
ENV_VARS=()
COMMAND=""
ARGS=()

while (($#)); do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case $1 in
    --) shift; ARGS=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --detach) DETACH=1; shift ;;
    --allow-local-workdir) ALLOW_LOCAL_WORKDIR=1; shift ;;
    --spot | --reserved)
      [[ -z $CAPACITY || $CAPACITY == "$1" ]] || die "--spot and --reserved exclude each other"
      CAPACITY=$1; shift ;;
    --name | --zone | --project | --accelerator-type | --version | --ref | --python | --extras | \
      --remote-dir | --venv | --env | --run-name | --worker | --log-dir)
      need_value "$1" $# "${2-}"
      case $1 in
        --name) NAME=$2 ;;
        --zone) ZONE=$2 ;;
        --project) PROJECT=$2 ;;
        --accelerator-type) ACCELERATOR=$2 ;;
        --version) VERSION=$2 ;;
        --ref) REF=$2 ;;
        --python) PYTHON_VERSION=$2 ;;
        --extras) EXTRAS=$2 ;;
        --remote-dir) REMOTE_DIR=$2 ;;
        --venv) REMOTE_VENV=$2 ;;
        --env) check_env_assignment "$2"; ENV_VARS+=("$2") ;;
        --run-name) RUN_NAME=$2 ;;
        --worker) WORKER=$2 ;;
        --log-dir) LOG_DIR=$2 ;;
      esac
      shift 2 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
      [[ -z $COMMAND ]] || die "unexpected argument '$1' after command '$COMMAND' (put command arguments after --)"
      COMMAND=$1; shift ;;
  esac
done

# ---- validation: everything is checked before the first command runs ----
case $COMMAND in
  create | install | up | check | train | run | logs | kill | status | stop | delete) ;;
  "") die "no command given (see --help)" ;;
  *) die "unknown command '$COMMAND' (see --help)" ;;
esac
[[ -n $NAME ]] || die "--name is required (or set R1V2_TPU_NAME)"
[[ $NAME =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
  die "--name '$NAME' is not a valid TPU name (lowercase letters, digits, '-'; starts with a letter)"
[[ -n $ZONE ]] || die "--zone is required (or set R1V2_TPU_ZONE), e.g. us-east5-a"
[[ $ACCELERATOR =~ ^(v[0-9]+[a-z]*)-[0-9]+$ ]] ||
  die "--accelerator-type '$ACCELERATOR' is not of the form GENERATION-CORES, e.g. v5p-128"
if [[ -z $VERSION ]]; then
  case ${BASH_REMATCH[1]} in
    v4) VERSION=tpu-ubuntu2204-base ;;
    v5p) VERSION=v2-alpha-tpuv5 ;;
    v5litepod) VERSION=v2-alpha-tpuv5-lite ;;
    v6e) VERSION=v2-alpha-tpuv6e ;;
    *) die "no default runtime version for accelerator type '$ACCELERATOR'; pass --version" ;;
  esac
fi
for pair in "remote-dir:$REMOTE_DIR" "venv:$REMOTE_VENV" "run-name:$RUN_NAME"; do
  [[ ${pair#*:} =~ ^[A-Za-z0-9_][A-Za-z0-9._-]*$ ]] ||
    die "--${pair%%:*} '${pair#*:}' must be a single folder/file name (letters, digits, '._-')"
done
[[ $WORKER =~ ^[0-9]+$ ]] || die "--worker must be a worker index (0, 1, ...), got '$WORKER'"
[[ $PYTHON_VERSION =~ ^3\.[0-9]+$ ]] || die "--python must look like 3.11, got '$PYTHON_VERSION'"
[[ $EXTRAS =~ ^[A-Za-z0-9_,-]*$ ]] || die "--extras must be a comma-separated list of extras, got '$EXTRAS'"
case $COMMAND in
  train)
    ((${#ARGS[@]})) || die "train needs the r1v2 train arguments after --, e.g. -- --config configs/mpo_38b.py --workdir gs://BUCKET/runs/mpo"
    has_option --workdir "${ARGS[@]}" || die "train arguments need --workdir (shared by all workers, e.g. gs://BUCKET/runs/mpo)"
    workdir=$(option_value --workdir "${ARGS[@]}")
    [[ $workdir == gs://* || $ALLOW_LOCAL_WORKDIR == 1 ]] ||
      die "--workdir '$workdir' is not gs://: every worker must write the same checkpoint folder; use a bucket, or --allow-local-workdir for a shared mount"
    ;;
  run) ((${#ARGS[@]})) || die "run needs a command after --, e.g. -- nvidia-smi" ;;
  *) ((${#ARGS[@]} == 0)) || die "command '$COMMAND' takes no arguments after --" ;;
esac
if [[ $COMMAND != train ]] && ((DETACH)); then die "--detach only applies to train"; fi

# ---- building blocks ----
TPU=(gcloud compute tpus tpu-vm)
LOCATION=(--zone="$ZONE")
if [[ -n $PROJECT ]]; then LOCATION+=(--project="$PROJECT"); fi
LOG_FILE="$LOG_DIR/$NAME/$(date -u +%Y%m%dT%H%M%SZ)-$COMMAND.log"
REMOTE_LOGS="~/r1v2-logs"

# The shell prefix run on each worker: code folder, venv, --env exports.
remote_prefix() {
  local prefix="cd ~/$REMOTE_DIR && . ~/$REMOTE_VENV/bin/activate" assignment
  for assignment in "${ENV_VARS[@]}"; do
    prefix+=" && export ${assignment%%=*}=$(shell_join "${assignment#*=}")"
  done
  printf '%s' "$prefix"
}

on_all_workers() {  # on_all_workers REMOTE_COMMAND: run it on every worker, logged locally
  run_logged "$LOG_FILE" "${TPU[@]}" ssh "$NAME" "${LOCATION[@]}" --worker=all --command "$1"
}

cmd_create() {
  local create=("${TPU[@]}" create "$NAME" "${LOCATION[@]}" --accelerator-type="$ACCELERATOR" --version="$VERSION")
  if [[ -n $CAPACITY ]]; then create+=("$CAPACITY"); fi
  local describe=("${TPU[@]}" describe "$NAME" "${LOCATION[@]}" "--format=value(acceleratorType,state)")
  if ((DRY_RUN)); then
    echo "# create runs only when describe finds no TPU named $NAME"
    run "${describe[@]}"
    run "${create[@]}"
    return
  fi
  local found type state
  if found=$("${describe[@]}" 2>/dev/null); then
    read -r type state <<<"$found"
    [[ $type == "$ACCELERATOR" ]] ||
      die "TPU $NAME already exists with accelerator type '$type', not '$ACCELERATOR'; delete it or pick another --name"
    case $state in
      PREEMPTED | TERMINATED) die "TPU $NAME exists but is $state: run 'delete', then 'create' again" ;;
    esac
    echo "reusing TPU $NAME ($type, $state)"
  else
    run "${create[@]}"
  fi
}

cmd_install() {
  local tarball="${TMPDIR:-/tmp}/r1v2-src-$NAME.tar.gz" uv="~/.local/bin/uv" package
  if ((!DRY_RUN)); then
    git -C "$REPO_ROOT" rev-parse --verify --quiet "$REF^{commit}" >/dev/null ||
      die "git ref '$REF' is not a commit of $REPO_ROOT (install ships 'git archive $REF': commit first)"
    if [[ $REF == HEAD && -n $(git -C "$REPO_ROOT" status --porcelain --untracked-files=no) ]]; then
      echo "warning: uncommitted changes are not shipped (install sends 'git archive HEAD')" >&2
    fi
  fi
  package="\"\$HOME/$REMOTE_DIR\""
  if [[ -n $EXTRAS ]]; then package="\"\$HOME/$REMOTE_DIR[$EXTRAS]\""; fi
  run git -C "$REPO_ROOT" archive --format=tar.gz --output="$tarball" "$REF"
  run "${TPU[@]}" scp "$tarball" "$NAME:r1v2-src.tar.gz" "${LOCATION[@]}" --worker=all
  # The TPU images ship Python 3.10 while r1v2_jax needs >= 3.11: uv provides the interpreter.
  on_all_workers "set -e; rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR && tar -xzf ~/r1v2-src.tar.gz -C ~/$REMOTE_DIR \
&& python3 -m pip install --user --quiet --upgrade uv \
&& { [ -x ~/$REMOTE_VENV/bin/python ] || $uv venv --python $PYTHON_VERSION ~/$REMOTE_VENV; } \
&& $uv pip install --python ~/$REMOTE_VENV/bin/python --quiet $package \
&& ~/$REMOTE_VENV/bin/r1v2 --help >/dev/null && echo \"worker \$(hostname): r1v2 installed\""
}

cmd_train() {
  local train
  train="r1v2 train $(shell_join "${ARGS[@]}")"
  if ((DETACH)); then
    # setsid: the run gets its own process group, so `kill` can stop all of it.
    on_all_workers "$(remote_prefix) && mkdir -p $REMOTE_LOGS && { setsid nohup $train \
> $REMOTE_LOGS/$RUN_NAME.log 2>&1 < /dev/null & echo \$! > $REMOTE_LOGS/$RUN_NAME.pid; }"
    echo "# detached run '$RUN_NAME'; follow it with: launch/tpu_pod.sh $(shell_join --name "$NAME" "${LOCATION[@]}" \
      --run-name "$RUN_NAME") logs"
  else
    on_all_workers "$(remote_prefix) && $train"
  fi
}

case $COMMAND in
  create) cmd_create ;;
  install) cmd_install ;;
  up) cmd_create; cmd_install ;;
  check)
    on_all_workers "$(remote_prefix) && python -c 'import jax; print(\"process\", jax.process_index(), \"of\", \
jax.process_count(), \"local devices\", jax.local_device_count(), \"global devices\", jax.device_count())'" ;;
  train) cmd_train ;;
  run) on_all_workers "$(remote_prefix) && ${ARGS[*]}" ;;
  logs)
    run_logged "$LOG_FILE" "${TPU[@]}" ssh "$NAME" "${LOCATION[@]}" --worker="$WORKER" \
      --command "tail -n +1 -F $REMOTE_LOGS/$RUN_NAME.log" ;;
  kill)
    on_all_workers "if [ -f $REMOTE_LOGS/$RUN_NAME.pid ]; then kill -TERM -- -\$(cat $REMOTE_LOGS/$RUN_NAME.pid) \
|| true; rm -f $REMOTE_LOGS/$RUN_NAME.pid; fi" ;;
  status) run "${TPU[@]}" describe "$NAME" "${LOCATION[@]}" ;;
  stop) run "${TPU[@]}" stop "$NAME" "${LOCATION[@]}" ;;
  delete) run "${TPU[@]}" delete "$NAME" "${LOCATION[@]}" --quiet ;;
esac
