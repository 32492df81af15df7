#!/usr/bin/env bash
# N ranks on this host: `hvdkit train -np N` (hvdkit runs horovodrun). Prints the exact command.
#
#   launch/local.sh RECIPE [hvdkit train options...]
#   NP=2 launch/local.sh recipes/digits_mlp.yaml
#   NP=4 FRAMEWORK=tensorflow CONTROLLER=gloo launch/local.sh recipes/digits_mlp.yaml --set train.epochs=5
#
# NP: ranks (default: this host's cores). FRAMEWORK: torch (default) or tensorflow.
# CONTROLLER: mpi (default) or gloo. Options after the recipe go to `hvdkit train` as they are.
# DRY_RUN=1 prints the command without running it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] || usage
recipe=$1; shift
show_and_run "$HVDKIT" train "$recipe" -f "${FRAMEWORK:-torch}" -np "${NP:-$(nproc)}" \
  --controller "${CONTROLLER:-mpi}" "$@"
