"""`hvdkit train`: from the command's arguments to a running job.

    run_training(args)
      inside someone else's job (mpirun, srun, horovodrun): train as this rank
      else: check everything once (recipe, layout, data, builders, Horovod), pick the run
            folder, save the TrainJob, then one rank in this process, or mpirun / horovodrun /
            Ray starting `python -m hvdkit.worker RUN_DIR` on every rank.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from hvdkit.adapters.base import FRAMEWORKS
from hvdkit.errors import UserError
from hvdkit.launch.defaults import apply_machine_defaults
from hvdkit.launch.job import check_horovod, run_job, warn_oversubscription
from hvdkit.launch.machines import elastic_settings
from hvdkit.launch.mpi_args import parse_mpi_args
from hvdkit.launch.options import LaunchOptions
from hvdkit.launch.preflight import check_builders, check_data, check_precision
from hvdkit.layout import ParallelLayout
from hvdkit.recipe import Recipe, load_recipe
from hvdkit.runtime.rank import in_horovod_job, rank_from_env
from hvdkit.runtime.world import JOB_STARTED, default_threads
from hvdkit.training.checkpoint import refuse_old_format
from hvdkit.training.rundir import new_run_dir, prepare_run_dir
from hvdkit.worker import JOB_ENV, TrainJob, done_line, train


def load_args_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe of `args`, with its --set overrides and --threads."""
    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    return load_recipe(args.recipe, overrides)


def train_job(args: argparse.Namespace, recipe: Recipe, run_dir: str | None,
              launch: dict) -> TrainJob:
    return TrainJob(recipe=recipe.to_dict(), framework=args.framework,
                    recipe_source=str(args.recipe), recipe_folder=recipe.folder,
                    run_dir=run_dir, progress=args.progress, tensorboard=args.tensorboard,
                    resume=args.resume, elastic=args.elastic, launch=launch)


def run_training(args: argparse.Namespace) -> int:
    """Train `args.recipe` as `hvdkit train` was asked to; the job's exit code."""
    if args.framework not in FRAMEWORKS:
        raise UserError(f"unknown framework {args.framework!r}; valid: {', '.join(FRAMEWORKS)}")
    if args.resume == "latest" and not args.run_dir:
        raise UserError("--resume without a path needs --run-dir (the run to resume), "
                        "or give the run folder: --resume runs/<run>")
    if in_horovod_job():
        return _train_in_their_job(args)
    os.environ[JOB_STARTED] = str(time.time())  # summary.json's wall_time counts from here
    if args.launcher == "ray":
        check_ray_flags(args)
    elif args.ray_address:
        raise UserError("--ray-address needs --launcher ray")
    # Flags left unset take this machine's tuned defaults (hvdkit tune), else the built-ins.
    machine = apply_machine_defaults(args)
    recipe = load_args_recipe(args)  # every recipe error surfaces here, before any rank starts
    check_data(recipe)  # files read and checked against the model
    options = launch_options(args, machine)
    options.validate()
    check_precision(recipe, options.multi_host, args.recipe)
    ParallelLayout.from_recipe(recipe, options.np, options.launch_controller, options.elastic,
                               source=args.recipe)
    launching = options.np > 1 or options.multi_host or options.elastic
    # A bad builder fails here, once, not on every rank (one process: imported, not called).
    check_builders(recipe, args.framework, call=launching)
    if launching and recipe.folder and (recipe.model.builder or recipe.data.builder):
        # The ranks on every host import builders from the recipe's folder.
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = recipe.folder + (os.pathsep + path if path else "")
    if args.resume is not None:  # an old pickle checkpoint: one line now, not one per rank
        refuse_old_format(args.run_dir if args.resume == "latest" else args.resume)
    run_dir = args.run_dir or str(new_run_dir(recipe.name, args.framework, options.np))
    prepare_run_dir(run_dir, args.resume, args.overwrite)  # before a framework loads
    check_horovod(args.framework, options.controller)
    warn_oversubscription(options)
    if args.timeline:
        os.environ["HOROVOD_TIMELINE"] = str(Path(run_dir).resolve() / "timeline.json")
    if options.elastic:  # threads per rank follow the ranks on each machine, not per host name
        env, options.network_interface = elastic_settings(
            str(options.host_discovery_script), options.np, options.network_interface)
        os.environ.update(env)
    if args.launcher == "ray":
        return _train_on_ray(args, recipe, options, run_dir)
    if options.np == 1 and not (options.multi_host or options.elastic):
        # One rank needs no launcher: Horovod starts as an MPI singleton in this process.
        return train(train_job(args, recipe, run_dir, {"launched_by": "in-process", "np": 1,
                                                       "machine_defaults": machine}))
    job = train_job(args, recipe, str(Path(run_dir).resolve()), options.describe())
    job.save(run_dir)
    program = [sys.executable, "-m", "hvdkit.worker", job.run_dir]
    return run_job(options, program, verbose=args.verbose, env={JOB_ENV: job.encoded()})


def _train_in_their_job(args: argparse.Namespace) -> int:
    """Started by mpirun or srun directly: every rank trains here; rank 0 takes the run folder
    (or picks one when none was given)."""
    recipe = load_args_recipe(args)
    if args.run_dir and rank_from_env() == 0:
        prepare_run_dir(args.run_dir, args.resume, args.overwrite)
    return train(train_job(args, recipe, args.run_dir, {"launched_by": "external"}))


def check_ray_flags(args: argparse.Namespace) -> None:
    """--launcher ray: Gloo, and the hosts are the Ray cluster's."""
    if args.controller not in (None, "gloo"):
        raise UserError("--launcher ray runs Horovod on Gloo; leave out --controller mpi")
    if args.hosts or args.hostfile or args.elastic:
        raise UserError("--launcher ray takes its hosts from the Ray cluster: leave out "
                        "--hosts, --hostfile and --elastic")
    args.controller = "gloo"


def _train_on_ray(args: argparse.Namespace, recipe: Recipe, options: LaunchOptions,
                  run_dir: str) -> int:
    from hvdkit.launch.ray_job import run_ray_job

    threads = args.threads or default_threads(options.np)
    job = train_job(args, recipe, str(Path(run_dir).resolve()),
                    {**options.describe(), "launched_by": "ray",
                     "ray_address": args.ray_address})
    job.launcher_reports = True
    job.save(run_dir)
    print(f"[hvdkit] launching on Ray ({args.ray_address or 'a local instance'}): -np "
          f"{options.np}, {threads} CPU(s) per rank: "
          f"{shlex.join(['hvdkit', 'train', args.recipe])}",
          file=sys.stderr, flush=True)
    code = run_ray_job(options.np, threads, str(job.run_dir), args.ray_address,
                       {JOB_ENV: job.encoded()})
    summary = Path(run_dir) / "summary.json"
    if code == 0 and summary.is_file():  # Ray may drop an actor's last lines at shutdown
        import json

        print(done_line(args.framework, json.loads(summary.read_text())), flush=True)
    return code


def launch_options(args: argparse.Namespace, machine: dict | None) -> LaunchOptions:
    return LaunchOptions(
        np=args.np, controller=args.controller, hosts=args.hosts, hostfile=args.hostfile,
        network_interface=args.network_interface, yield_when_idle=args.yield_when_idle,
        mpi_args=parse_mpi_args(args.mpi_args), elastic=args.elastic, min_np=args.min_np,
        max_np=args.max_np, host_discovery_script=args.host_discovery_script,
        stall_check=args.stall_check, stall_warning_seconds=args.stall_warning_seconds,
        stall_shutdown_seconds=args.stall_shutdown_seconds, peer_timeout=args.peer_timeout,
        machine_defaults=machine,
    )
