"""The `hvdkit` command: argument parsing only; the work lives in the modules it calls.

    hvdkit train recipes/digits_mlp.yaml --framework torch -np 2
    hvdkit train recipes/digits_mlp.yaml --framework tensorflow -np 2 --controller gloo
    hvdkit info
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hvdkit.adapters.base import FRAMEWORKS
from hvdkit.bench.commands import COMMANDS as STUDY_COMMANDS
from hvdkit.bench.commands import add_parsers as add_study_parsers
from hvdkit.builders import check_builders
from hvdkit.defaults import apply_machine_defaults
from hvdkit.errors import UserError
from hvdkit.launcher import LaunchOptions, check_horovod, run_job, warn_oversubscription
from hvdkit.layout import ParallelLayout
from hvdkit.recipe import Recipe, load_recipe
from hvdkit.worker import in_horovod_job, run_worker


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a recipe (launches horovodrun when not in a job)")
    p.add_argument("recipe", help="path to a recipe YAML file")
    p.add_argument("--framework", "-f", default="torch", help="torch or tensorflow")
    p.add_argument("-np", "--np", dest="np", type=int, default=1, help="number of ranks")
    p.add_argument("--controller", help="mpi (default, or this machine's tuned one) or gloo")
    p.add_argument("--hosts", "-H", help="host list for horovodrun, e.g. h1:2,h2:2")
    p.add_argument("--hostfile", help="hostfile with `host slots=N` lines")
    p.add_argument("--network-interface", help="network interface(s) for Horovod traffic")
    p.add_argument("--peer-timeout", type=int, default=30, metavar="SECONDS",
                   help="multi-host: fail the job when a host is silent this long (default 30)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set optimizer.lr=0.1 (repeatable)")
    p.add_argument("--threads", type=int, help="intra-op threads per rank (train.threads)")
    p.add_argument("--run-dir", help="where the run's files go (default runs/<name>-...)")
    p.add_argument("--yield-when-idle", dest="yield_when_idle", action="store_true",
                   default=None, help="OpenMPI mpi_yield_when_idle 1 (the default)")
    p.add_argument("--no-yield-when-idle", dest="yield_when_idle", action="store_false",
                   help="keep OpenMPI's busy-polling (hvdkit turns on mpi_yield_when_idle)")
    p.add_argument("--mpi-args", default="", help="extra arguments for mpirun")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress output")
    p.add_argument("--resume", nargs="?", const="latest", metavar="PATH",
                   help="resume from a checkpoint: the newest good one of --run-dir, or a run "
                        "folder, checkpoint folder or file")
    p.add_argument("--elastic", action="store_true",
                   help="Horovod elastic training (needs --host-discovery-script)")
    p.add_argument("--min-np", type=int, help="elastic: fewest workers to keep going with")
    p.add_argument("--max-np", type=int, help="elastic: most workers to take in")
    p.add_argument("--host-discovery-script",
                   help="elastic: executable printing available host:slots lines")
    p.add_argument("--stall-warning-seconds", type=int,
                   help="name the ranks missing from a collective after this many seconds")
    p.add_argument("--stall-shutdown-seconds", type=int,
                   help="end a job stalled for this many seconds (default: never)")
    p.add_argument("--no-stall-check", dest="stall_check", action="store_false",
                   help="turn Horovod's stall inspector off")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hvdkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    add_study_parsers(sub)  # scale, bench allreduce, tune (hvdkit.bench.commands)
    sub.add_parser("info", help="versions, Horovod's build, ranks, threads and launch defaults")
    return parser.parse_args(argv)


def _recipe(args: argparse.Namespace) -> Recipe:
    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    return load_recipe(args.recipe, overrides)


def train(args: argparse.Namespace) -> int:
    if args.framework not in FRAMEWORKS:
        raise UserError(f"unknown framework {args.framework!r}; valid: {', '.join(FRAMEWORKS)}")
    # Flags left unset take this machine's tuned defaults (hvdkit tune), else the built-ins.
    machine = None if in_horovod_job() else apply_machine_defaults(args)
    recipe = _recipe(args)  # every recipe error surfaces here, before any worker starts
    if args.resume == "latest" and not args.run_dir:
        raise UserError("--resume without a path needs --run-dir (the run to resume), "
                        "or give the run folder: --resume runs/<run>")
    if in_horovod_job():
        return train_worker(args, recipe, json.loads(os.environ.get("HVDKIT_LAUNCH", "{}")))
    options = _launch_options(args, machine)
    options.validate()
    ParallelLayout.from_recipe(recipe, options.np, options.launch_controller, options.elastic,
                               source=args.recipe)
    check_horovod(args.framework, options.controller)
    warn_oversubscription(options)
    launching = options.np > 1 or options.multi_host or options.elastic
    # A bad builder fails here, once, not on every rank (one process: imported, not called).
    check_builders(recipe, args.framework, call=launching)
    if launching and recipe.folder and (recipe.model.builder or recipe.data.builder):
        # The ranks on every host import builders from the recipe's folder (hvdkit.builders).
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = recipe.folder + (os.pathsep + path if path else "")
    from hvdkit.trainer import default_run_dir

    run_dir = args.run_dir or str(default_run_dir(recipe, args.framework, args.np))
    if options.np == 1 and not (options.multi_host or options.elastic):
        # One rank needs no launcher: Horovod starts as an MPI singleton in this process.
        args.run_dir = run_dir
        return train_worker(args, recipe, {"launched_by": "in-process", "np": 1,
                                              "machine_defaults": machine})
    return run_job(options, _worker_command(args, run_dir))


def _launch_options(args: argparse.Namespace, machine: dict | None) -> LaunchOptions:
    return LaunchOptions(
        np=args.np, controller=args.controller, hosts=args.hosts, hostfile=args.hostfile,
        network_interface=args.network_interface, yield_when_idle=args.yield_when_idle,
        mpi_args=args.mpi_args.split(), elastic=args.elastic, min_np=args.min_np,
        max_np=args.max_np, host_discovery_script=args.host_discovery_script,
        stall_check=args.stall_check, stall_warning_seconds=args.stall_warning_seconds,
        stall_shutdown_seconds=args.stall_shutdown_seconds, peer_timeout=args.peer_timeout,
        machine_defaults=machine,
    )


def _worker_command(args: argparse.Namespace, run_dir: str) -> list[str]:
    """What every rank runs: this same `hvdkit train`, which then trains in the job."""
    worker = [sys.executable, "-m", "hvdkit", "train", args.recipe, "--framework",
              args.framework, "--run-dir", run_dir]
    for item in args.overrides:
        worker += ["--set", item]
    if args.threads is not None:
        worker += ["--threads", str(args.threads)]
    if not args.progress:
        worker.append("--no-progress")
    if args.resume:
        worker += ["--resume", args.resume]
    if args.elastic:
        worker.append("--elastic")
    return worker


def train_worker(args: argparse.Namespace, recipe: Recipe, launch: dict) -> int:
    """Train in this process (one rank of a job); failures name the rank, exit non-zero."""
    from hvdkit.trainer import Trainer

    def train_here() -> int:
        # Started by mpirun or srun directly: rank 0 picks the run folder if none was given.
        trainer = Trainer(recipe, args.framework, run_dir=args.run_dir or "auto",
                          progress=args.progress,
                          launch_info=launch or {"launched_by": "external"},
                          resume=args.resume, elastic=args.elastic)
        summary = trainer.fit()
        if trainer.world is not None and trainer.world.is_root:
            accuracy = summary.get("test_accuracy")
            shown = f"test accuracy {accuracy:.4f}" if accuracy is not None else "no evaluation"
            if "test_perplexity" in summary:
                shown += f", test perplexity {summary['test_perplexity']:.3f}"
            rate = summary["samples_per_sec"]
            print(f"[hvdkit] done: {args.framework} np={summary['np']} {shown}, "
                  f"{rate:.0f} samples/s ({rate / summary['np']:.0f} per rank), run files in "
                  f"{summary.get('run_dir')}", flush=True)
        return 0

    return run_worker(train_here)


def info(_: argparse.Namespace) -> int:
    from hvdkit.info import describe

    print(describe())
    return 0


COMMANDS = {"train": train, "info": info, **STUDY_COMMANDS}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"hvdkit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
