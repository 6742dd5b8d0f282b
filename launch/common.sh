# Helpers shared by the launch scripts (sourced, not executed).
# Every external command goes through `run`, so that --dry-run prints exactly what a real
# run would execute, one command per line prefixed with "+ ", and executes nothing.

# die MESSAGE: a usage error; exit status 2 like argparse.
die() {
  echo "${PROG}: error: $*" >&2
  exit 2
}

# shell_join WORD...: the words quoted so that pasting the line into bash gives them back.
shell_join() {
  local out="" word quote="'\\''"
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=" $word"
    else
      out+=" '${word//\'/$quote}'"
    fi
  done
  printf '%s' "${out# }"
}

# run CMD...: print the command, then run it unless DRY_RUN=1.
run() {
  echo "+ $(shell_join "$@")"
  if ((DRY_RUN)); then return 0; fi
  "$@"
}

# run_logged LOGFILE CMD...: like run, with stdout+stderr also appended to LOGFILE.
run_logged() {
  local log=$1
  shift
  echo "+ $(shell_join "$@") 2>&1 | tee -a $(shell_join "$log")"
  if ((DRY_RUN)); then return 0; fi
  mkdir -p "$(dirname "$log")"
  "$@" 2>&1 | tee -a "$log"
}

# need_value OPTION ARGC [NEXT]: OPTION must be followed by a value.
need_value() {
  if (($2 < 2)) || [[ $3 == --* ]]; then die "$1 needs a value"; fi
}

# check_env_assignment KEY=VALUE: a valid environment assignment for --env.
check_env_assignment() {
  [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env expects KEY=VALUE with a shell variable name as KEY, got '$1'"
}

# has_option NAME ARG...: whether ARG... contains "NAME VALUE" or "NAME=VALUE".
has_option() {
  local name=$1 arg
  shift
  for arg in "$@"; do
    if [[ $arg == "$name" || $arg == "$name="* ]]; then return 0; fi
  done
  return 1
}

# option_value NAME ARG...: the value of NAME in ARG... (last occurrence), or nothing.
option_value() {
  local name=$1 value="" prev=""
  shift
  for arg in "$@"; do
    if [[ $prev == "$name" ]]; then value=$arg; fi
    if [[ $arg == "$name="* ]]; then value=${arg#"$name="}; fi
    prev=$arg
  done
  printf '%s' "$value"
}
