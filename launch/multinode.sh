#!/usr/bin/env bash
# A job across hosts over ssh: `hvdkit train -H ...` (hvdkit runs horovodrun), MPI or Gloo.
# Prints the exact command.
#
#   HOSTS=node1:2,node2:2 NIC=eth0 launch/multinode.sh recipes/digits_mlp.yaml
#   HOSTFILE=hosts.txt CONTROLLER=gloo launch/multinode.sh recipes/digits_mlp.yaml -f tensorflow
#
# HOSTS (`host:slots,...`) or HOSTFILE (`host slots=N` lines): where ranks run (one is needed).
# NP: ranks (default: every slot). NIC: interface(s) for Horovod's traffic, e.g. eth0 (default:
# horovodrun finds the interfaces all hosts share). CONTROLLER: mpi (default) or gloo.
# FRAMEWORK: torch (default) or tensorflow. PEER_TIMEOUT: seconds a silent (lost) host is
# waited for before the job fails (default 30). Options after the recipe go to `hvdkit train`.
# Every host needs passwordless ssh from here (key, known host or StrictHostKeyChecking=no in
# ~/.ssh/config) and this checkout with its .venv at the same path. DRY_RUN=1 only prints.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] || usage
recipe=$1; shift
if [[ -n "${HOSTS:-}" ]]; then
  where=(-H "$HOSTS"); slots=$(total_slots "$HOSTS")
elif [[ -n "${HOSTFILE:-}" ]]; then
  where=(--hostfile "$HOSTFILE"); slots=$(total_slots_in "$HOSTFILE")
else
  echo "multinode.sh: set HOSTS=host1:2,host2:2 or HOSTFILE=FILE" >&2; usage
fi
nic=()
if [[ -n "${NIC:-}" ]]; then nic=(--network-interface "$NIC"); fi
show_and_run "$HVDKIT" train "$recipe" -f "${FRAMEWORK:-torch}" -np "${NP:-$slots}" \
  "${where[@]}" "${nic[@]}" --controller "${CONTROLLER:-mpi}" \
  --peer-timeout "${PEER_TIMEOUT:-30}" "$@"
