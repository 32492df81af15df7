#!/usr/bin/env bash
# Plain `mpirun`, no horovodrun: every rank runs `hvdkit train`, which sees its MPI rank and
# trains directly. The environment goes to every rank with -x; each rank is bound to its own
# cores and runs that many threads. Prints the exact command.
#
#   NP=2 launch/mpirun.sh recipes/digits_mlp.yaml
#   HOSTS=node1:2,node2:2 NIC=eth0 launch/mpirun.sh recipes/digits_mlp.yaml -f tensorflow
#
# NP: ranks (default: this host's cores, or every slot of HOSTS/HOSTFILE). HOSTS (`host:slots`)
# or HOSTFILE (`host slots=N`): ranks on other hosts over ssh (orted), as for multinode.sh.
# NIC: the interface for MPI's traffic between hosts. PER_HOST: ranks per host (default: NP,
# or the first host's slots) and CORES: cores per host (default: this host's) set the binding:
# CORES/PER_HOST cores and threads per rank. BIND=none turns binding off. FRAMEWORK: torch
# (default) or tensorflow. MPIRUN_ARGS: more mpirun arguments. DRY_RUN=1 only prints.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] || usage
recipe=$1; shift

where=(); per_host=${NP:-$(nproc)}; np=${NP:-$(nproc)}
if [[ -n "${HOSTS:-}" ]]; then
  where=(-H "$HOSTS"); np=${NP:-$(total_slots "$HOSTS")}
  first=${HOSTS%%,*}; [[ "$first" == *:* ]] && per_host=${first##*:} || per_host=1
elif [[ -n "${HOSTFILE:-}" ]]; then
  where=(--hostfile "$HOSTFILE"); np=${NP:-$(total_slots_in "$HOSTFILE")}
  per_host=$(total_slots_in <(grep -v '^[[:space:]]*#' "$HOSTFILE" | grep -m1 .))
fi
per_host=${PER_HOST:-$per_host}
threads=$(( ${CORES:-$(nproc)} / per_host )); (( threads >= 1 )) || threads=1

args=(--np "$np" "${where[@]}" --tag-output --mca mpi_yield_when_idle 1)
if [[ $(id -u) == 0 ]]; then args+=(--allow-run-as-root); fi
if [[ "${BIND:-core}" == none ]] || (( per_host * threads > ${CORES:-$(nproc)} )); then
  args+=(--bind-to none)
else
  args+=(--map-by "slot:PE=$threads" --bind-to core)
fi
if [[ ${#where[@]} -gt 0 ]]; then
  # Between hosts: MPI's traffic on NIC; a host lost mid-run ends the job in ~30 s.
  if [[ -n "${NIC:-}" ]]; then
    args+=(--mca btl_tcp_if_include "$NIC" --mca oob_tcp_if_include "$NIC")
  fi
  args+=(--mca oob_tcp_keepalive_time 15 --mca oob_tcp_keepalive_intvl 3
         --mca oob_tcp_keepalive_probes 5)
fi
# The environment every rank needs: the venv, libraries, and any Horovod/hvdkit/OpenMP knobs.
knobs=$(compgen -e | grep -E '^(HOROVOD_|HVDKIT_|OMP_|TF_CPP_|CUDA_VISIBLE_DEVICES$)' || true)
for name in PATH LD_LIBRARY_PATH PYTHONPATH VIRTUAL_ENV $knobs; do
  if [[ -n "${!name+set}" ]]; then args+=(-x "$name"); fi
done
read -ra extra <<<"${MPIRUN_ARGS:-}"
show_and_run mpirun "${args[@]}" "${extra[@]}" "$HVDKIT" train "$recipe" \
  -f "${FRAMEWORK:-torch}" --threads "$threads" "$@"
