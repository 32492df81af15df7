# Shared by the launch scripts (sourced, not run): where hvdkit is, and how a command is run.
#   show CMD...           prints the exact command (shell-quoted).
#   show_and_run CMD...   prints it, then runs it in place of the script; with DRY_RUN=1 it
#                         only prints it.
#   total_slots H1:2,H2:2 | total_slots_in FILE   the number of ranks a host list holds.
#   given "-f|--framework" ARGS...   true when ARGS hold that option (`-f x` or `--framework=x`).

HVDKIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${HVDKIT:-}" ]]; then
  if [[ -x "$HVDKIT_ROOT/.venv/bin/hvdkit" ]]; then HVDKIT="$HVDKIT_ROOT/.venv/bin/hvdkit"
  else HVDKIT=hvdkit; fi
fi

show() {
  local word line="[launch]"
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then line+=" $word"
    else line+=" '${word//\'/\'\\\'\'}'"; fi
  done
  echo "$line"
}

show_and_run() {
  show "$@"
  if [[ "${DRY_RUN:-0}" == 1 ]]; then exit 0; fi
  exec "$@"
}

# Sum of the slots in a -H list (a host without :N has 1 slot).
total_slots() {
  local total=0 entry
  IFS=',' read -ra entries <<<"$1"
  for entry in "${entries[@]}"; do
    if [[ "$entry" == *:* ]]; then total=$((total + ${entry##*:})); else total=$((total + 1)); fi
  done
  echo "$total"
}

# Sum of the slots in a hostfile (`host slots=N` or `host:N` lines; `#` comments).
total_slots_in() {
  local total=0 line slots
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line%%#*}"
    [[ -z "${line//[[:space:]]/}" ]] && continue
    if [[ "$line" =~ slots=([0-9]+) ]]; then slots=${BASH_REMATCH[1]}
    elif [[ "$line" =~ :([0-9]+) ]]; then slots=${BASH_REMATCH[1]}
    else slots=1; fi
    total=$((total + slots))
  done <"$1"
  echo "$total"
}

# Print the comment block at the top of the calling script (its usage), then exit 2.
usage() {
  awk 'NR > 1 && /^#/ && !/^#SBATCH/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
}

# True when one of the |-separated options appears in the arguments that follow.
given() {
  local options=$1 arg option
  shift
  for arg in "$@"; do
    IFS='|' read -ra names <<<"$options"
    for option in "${names[@]}"; do
      if [[ "$arg" == "$option" || "$arg" == "$option="* ]]; then return 0; fi
    done
  done
  return 1
}
