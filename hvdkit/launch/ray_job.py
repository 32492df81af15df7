"""`hvdkit train RECIPE -np N --launcher ray [--ray-address ADDRESS]`: the same ranks, started
by Horovod's own Ray integration (`horovod.ray.RayExecutor`) instead of mpirun or horovodrun.

    make setup-ray                                              # Ray, an optional extra
    hvdkit train recipes/digits_mlp.yaml -np 2 --launcher ray   # a local Ray instance
    hvdkit train recipes/digits_mlp.yaml -np 8 --launcher ray --ray-address auto   # a cluster

RayExecutor places N actors (one CPU bundle of `threads` cores each), sets each one's Horovod
rank, size and Gloo rendezvous, and runs a function on all of them: here the rank's entry
(hvdkit.worker), which sees its rank and trains, exactly as under horovodrun. Without
`--ray-address` hvdkit starts a Ray instance on this machine for the job and stops it
afterwards; with one it joins that cluster (every node needs this checkout, its .venv and Ray
at the same paths). Ray Train dropped its Horovod trainer; RayExecutor is the way Ray users
run Horovod. The controller is Gloo (RayExecutor's); output comes back through Ray's log forwarding.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hvdkit.errors import UserError

# What each rank needs from the launching shell, besides the arguments.
_PASSED_ENV = ("HVDKIT_JOB_STARTED", "HVDKIT_NO_MACHINE_DEFAULTS",
               "TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH")


def _run_rank(run_dir: str, env: dict[str, str], cwd: str) -> int:
    """In each Ray actor: one rank of the job (Horovod's variables are set), as
    `python -m hvdkit.worker RUN_DIR` runs it, in the actor's process."""
    os.environ.update(env)
    if Path(cwd).is_dir():
        os.chdir(cwd)
    from hvdkit.worker import run

    return run(run_dir)


def run_ray_job(np_: int, threads: int, run_dir: str, address: str | None,
                env: dict[str, str]) -> int:
    """Run the job saved for `run_dir` on `np_` Ray actors; the largest exit code of the
    ranks."""
    try:
        import ray
        from horovod.ray import RayExecutor
    except ImportError as exc:
        raise UserError(f"--launcher ray needs Ray ({exc}); run `make setup-ray`") from None
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # plain `(pid=...)` prefixes in the console
    passed = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    passed.update(env)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 **({} if address else {"num_cpus": max(os.cpu_count() or 1, np_ * threads)}))
    executor: Any = None
    try:
        executor = RayExecutor(RayExecutor.create_settings(timeout_s=120), num_workers=np_,
                               cpus_per_worker=threads, use_gpu=False)
        executor.start()
        codes = executor.run(_run_rank, args=[run_dir, passed, os.getcwd()])
        return max(int(code or 0) for code in codes)
    finally:
        if executor is not None:
            executor.shutdown()
        if started_here:
            ray.shutdown()
