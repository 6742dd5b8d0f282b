#!/usr/bin/env bash
# SLURM GPU launcher for r1v2_jax: writes an sbatch script that runs `r1v2 train` with one
# process per node (all of its GPUs) or one per GPU, the JAX coordinator being the first
# node of the allocation, and submits it. See launch/README.md.
set -euo pipefail

PROG=slurm_gpu.sh
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$SCRIPT_DIR")
# shellcheck source=launch/common.sh
source "$SCRIPT_DIR/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/slurm_gpu.sh [OPTIONS] -- R1V2_TRAIN_ARGS...

R1V2_TRAIN_ARGS are passed to `r1v2 train` and must include --config and --workdir (a
folder every node can reach). The script adds --coordinator, --num-processes and
--process-id itself.

Options (environment variable in brackets):
  --nodes N                number of nodes (default 1) [R1V2_SLURM_NODES]
  --gpus-per-node G        GPUs per node (default 8) [R1V2_SLURM_GPUS_PER_NODE]
  --process-per node|gpu   one JAX process per node seeing all its GPUs, or one per GPU
                           (default node) [R1V2_SLURM_PROCESS_PER]
  --time TIME              time limit, SLURM format (default 24:00:00) [R1V2_SLURM_TIME]
  --partition P            partition [R1V2_SLURM_PARTITION]
  --account A              account [R1V2_SLURM_ACCOUNT]
  --qos Q                  quality of service [R1V2_SLURM_QOS]
  --job-name NAME          job name (default r1v2-train)
  --cpus-per-task N        CPUs per process (default: SLURM's)
  --venv DIR               virtualenv activated in every process [R1V2_VENV]
  --container-image IMAGE  run every process in this container (pyxis/enroot srun flags)
  --container-mounts SPEC  pyxis mounts, e.g. /data:/data,/ckpt:/ckpt
  --setup CMD              shell line run before srun, e.g. 'module load cuda/12.4' (repeatable)
  --env KEY=VALUE          exported to every process (repeatable)
  --port PORT              coordinator port (default 20000 + job id % 20000)
  --requeue                let SLURM requeue the job after preemption (training auto-resumes)
  --sbatch-opt OPT         extra #SBATCH line, e.g. --sbatch-opt=--exclusive (repeatable)
  --chdir DIR              working directory of the job (default: this repository)
  --log-dir DIR            where the sbatch file and the job's output go
                           (default runs/slurm-logs) [R1V2_SLURM_LOG_DIR]
  --dry-run                print the sbatch file and the sbatch command; submit nothing
  -h, --help               this help

Example:
  launch/slurm_gpu.sh --nodes 4 --partition gpu --account proj --venv /nfs/r1v2/.venv -- \
      --config configs/mpo_38b.py --workdir /nfs/runs/mpo
EOF
}

NODES=${R1V2_SLURM_NODES:-1}
GPUS_PER_NODE=${R1V2_SLURM_GPUS_PER_NODE:-8}
PROCESS_PER=${R1V2_SLURM_PROCESS_PER:-node}
TIME=${R1V2_SLURM_TIME:-24:00:00}
PARTITION=${R1V2_SLURM_PARTITION:-}
ACCOUNT=${R1V2_SLURM_ACCOUNT:-}
QOS=${R1V2_SLURM_QOS:-}
JOB_NAME=r1v2-train
CPUS_PER_TASK=""
VENV=${R1V2_VENV:-}
CONTAINER_IMAGE=""
CONTAINER_MOUNTS=""
SETUP=()
ENV_VARS=()
PORT=""
REQUEUE=0
SBATCH_OPTS=()
CHDIR=$REPO_ROOT
LOG_DIR=${R1V2_SLURM_LOG_DIR:-runs/slurm-logs}
DRY_RUN=0
TRAIN_ARGS=()

while (($#)); do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case $1 in
    --) shift; TRAIN_ARGS=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --requeue) REQUEUE=1; shift ;;
    --nodes | --gpus-per-node | --process-per | --time | --partition | --account | --qos | --job-name | \
      --cpus-per-task | --venv | --container-image | --container-mounts | --setup | --env | --port | \
      --sbatch-opt | --chdir | --log-dir)
      # --sbatch-opt values are options themselves, e.g. --sbatch-opt=--exclusive
      if [[ $1 == --sbatch-opt ]]; then (($# >= 2)) || die "--sbatch-opt needs a value"; else need_value "$1" $# "${2-}"; fi
      case $1 in
        --nodes) NODES=$2 ;;
        --gpus-per-node) GPUS_PER_NODE=$2 ;;
        --process-per) PROCESS_PER=$2 ;;
        --time) TIME=$2 ;;
        --partition) PARTITION=$2 ;;
        --account) ACCOUNT=$2 ;;
        --qos) QOS=$2 ;;
        --job-name) JOB_NAME=$2 ;;
        --cpus-per-task) CPUS_PER_TASK=$2 ;;
        --venv) VENV=$2 ;;
        --container-image) CONTAINER_IMAGE=$2 ;;
        --container-mounts) CONTAINER_MOUNTS=$2 ;;
        --setup) SETUP+=("$2") ;;
        --env) check_env_assignment "$2"; ENV_VARS+=("$2") ;;
        --port) PORT=$2 ;;
        --sbatch-opt) SBATCH_OPTS+=("$2") ;;
        --chdir) CHDIR=$2 ;;
        --log-dir) LOG_DIR=$2 ;;
      esac
      shift 2 ;;
    *) die "unknown argument '$1' (options first, then -- and the r1v2 train arguments; see --help)" ;;
  esac
done

# ---- validation ----
positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"; }
positive --nodes "$NODES"
positive --gpus-per-node "$GPUS_PER_NODE"
if [[ -n $CPUS_PER_TASK ]]; then positive --cpus-per-task "$CPUS_PER_TASK"; fi
case $PROCESS_PER in
  node) TASKS_PER_NODE=1 ;;
  gpu) TASKS_PER_NODE=$GPUS_PER_NODE ;;
  *) die "--process-per must be 'node' or 'gpu', got '$PROCESS_PER'" ;;
esac
[[ $TIME =~ ^([0-9]+-)?[0-9]+(:[0-9]{1,2}){0,2}$ ]] ||
  die "--time '$TIME' is not a SLURM time (MINUTES, HH:MM:SS or DAYS-HH:MM:SS)"
if [[ -n $PORT ]]; then
  [[ $PORT =~ ^[0-9]+$ ]] && ((PORT >= 1024 && PORT <= 65535)) || die "--port must be in 1024..65535, got '$PORT'"
fi
for pair in "partition:$PARTITION" "account:$ACCOUNT" "qos:$QOS" "job-name:$JOB_NAME"; do
  [[ ${pair#*:} =~ ^[A-Za-z0-9_.,:+-]*$ ]] || die "--${pair%%:*} '${pair#*:}' contains characters SLURM names do not allow"
done
[[ -n $JOB_NAME ]] || die "--job-name must not be empty"
for opt in "${SBATCH_OPTS[@]}"; do
  [[ $opt == -* && $opt != *$'\n'* ]] || die "--sbatch-opt expects one sbatch option like --exclusive, got '$opt'"
done
if [[ -n $CONTAINER_MOUNTS && -z $CONTAINER_IMAGE ]]; then die "--container-mounts needs --container-image"; fi
((${#TRAIN_ARGS[@]})) ||
  die "no r1v2 train arguments: add them after --, e.g. -- --config configs/mpo_38b.py --workdir /nfs/runs/mpo"
has_option --config "${TRAIN_ARGS[@]}" || die "r1v2 train arguments need --config (e.g. --config configs/mpo_38b.py)"
has_option --workdir "${TRAIN_ARGS[@]}" || die "r1v2 train arguments need --workdir (on storage every node can reach)"
for flag in --coordinator --num-processes --process-id; do
  if has_option "$flag" "${TRAIN_ARGS[@]}"; then die "do not pass $flag: the script derives it from the SLURM allocation"; fi
done

case $LOG_DIR in /*) ;; *) LOG_DIR="$PWD/$LOG_DIR" ;; esac
case $CHDIR in /*) ;; *) CHDIR="$PWD/$CHDIR" ;; esac
SCRIPT_FILE="$LOG_DIR/$JOB_NAME-$(date -u +%Y%m%dT%H%M%SZ).sbatch"

# ---- the sbatch script ----
sbatch_script() {
  local line
  echo "#!/bin/bash"
  echo "# Written by launch/slurm_gpu.sh: r1v2 train on $NODES node(s) x $GPUS_PER_NODE GPU(s), one process per $PROCESS_PER."
  echo "#SBATCH --job-name=$JOB_NAME"
  echo "#SBATCH --nodes=$NODES"
  echo "#SBATCH --ntasks=$((NODES * TASKS_PER_NODE))"
  echo "#SBATCH --ntasks-per-node=$TASKS_PER_NODE"
  echo "#SBATCH --gpus-per-node=$GPUS_PER_NODE"
  echo "#SBATCH --time=$TIME"
  if [[ -n $PARTITION ]]; then echo "#SBATCH --partition=$PARTITION"; fi
  if [[ -n $ACCOUNT ]]; then echo "#SBATCH --account=$ACCOUNT"; fi
  if [[ -n $QOS ]]; then echo "#SBATCH --qos=$QOS"; fi
  if [[ -n $CPUS_PER_TASK ]]; then echo "#SBATCH --cpus-per-task=$CPUS_PER_TASK"; fi
  echo "#SBATCH --output=$LOG_DIR/%x-%j.out"
  echo "#SBATCH --chdir=$CHDIR"
  if ((REQUEUE)); then echo "#SBATCH --requeue"; fi
  for line in "${SBATCH_OPTS[@]}"; do echo "#SBATCH $line"; done
  echo "set -euo pipefail"
  echo
  for line in "${SETUP[@]}"; do echo "$line"; done
  for line in "${ENV_VARS[@]}"; do echo "export ${line%%=*}=$(shell_join "${line#*=}")"; done
  echo "export R1V2_VENV=$(shell_join "$VENV")"
  echo
  echo "# JAX coordinator: process 0 runs on the first node of the allocation."
  echo "# (no '| head -n 1': under pipefail, scontrol killed by SIGPIPE would fail the job)"
  echo "node_names=\$(scontrol show hostnames \"\$SLURM_JOB_NODELIST\")"
  echo "coordinator_host=\${node_names%%\$'\\n'*}"
  if [[ -n $PORT ]]; then
    echo "coordinator_port=$PORT"
  else
    echo "# The port follows the job id, so two jobs sharing a node do not collide."
    echo "coordinator_port=\$((20000 + SLURM_JOB_ID % 20000))"
  fi
  echo "export R1V2_COORDINATOR=\"\$coordinator_host:\$coordinator_port\""
  echo "echo \"r1v2: \$SLURM_NTASKS processes, coordinator \$R1V2_COORDINATOR\""
  echo
  echo "train_args=($(shell_join "${TRAIN_ARGS[@]}"))"
  echo
  echo "# Per process: activate the venv, pick its GPU(s), join the coordinator as process SLURM_PROCID."
  local srun="srun --nodes=$NODES --ntasks=$((NODES * TASKS_PER_NODE)) --ntasks-per-node=$TASKS_PER_NODE --kill-on-bad-exit=1"
  # srun does not inherit --cpus-per-task from sbatch (SLURM >= 22.05)
  if [[ -n $CPUS_PER_TASK ]]; then srun+=" --cpus-per-task=$CPUS_PER_TASK"; fi
  if [[ -n $CONTAINER_IMAGE ]]; then
    srun+=" --container-image=$(shell_join "$CONTAINER_IMAGE") --container-workdir=$(shell_join "$CHDIR")"
    if [[ -n $CONTAINER_MOUNTS ]]; then srun+=" --container-mounts=$(shell_join "$CONTAINER_MOUNTS")"; fi
  fi
  echo "$srun bash -c '"
  echo '  set -euo pipefail'
  echo '  if [ -n "$R1V2_VENV" ]; then'
  echo '    [ -f "$R1V2_VENV/bin/activate" ] || { echo "r1v2: no venv at $R1V2_VENV" >&2; exit 1; }'
  echo '    . "$R1V2_VENV/bin/activate"'
  echo '  fi'
  if [[ $PROCESS_PER == gpu ]]; then
    # The SLURM_LOCALID-th GPU of those the node gives the job (all of them when unset).
    echo '  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then'
    echo '    IFS=, read -r -a node_gpus <<<"$CUDA_VISIBLE_DEVICES"'
    echo '    export CUDA_VISIBLE_DEVICES="${node_gpus[$SLURM_LOCALID]}"'
    echo '  else'
    echo '    export CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"'
    echo '  fi'
  fi
  echo '  command -v r1v2 >/dev/null || { echo "r1v2: the r1v2 command is not on PATH (use --venv or --container-image)" >&2; exit 1; }'
  echo '  exec r1v2 train "$@" --coordinator "$R1V2_COORDINATOR" --num-processes "$SLURM_NTASKS" --process-id "$SLURM_PROCID"'
  echo "' r1v2-train \"\${train_args[@]}\""
}

if ((DRY_RUN)); then
  echo "# sbatch file (dry run: not written to $SCRIPT_FILE)"
  sbatch_script
else
  mkdir -p "$LOG_DIR"
  sbatch_script >"$SCRIPT_FILE"
  echo "wrote $SCRIPT_FILE"
fi
run sbatch "$SCRIPT_FILE"
if ((!DRY_RUN)); then echo "job output: $LOG_DIR/$JOB_NAME-<job id>.out"; fi
