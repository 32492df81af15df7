"""The `hvdkit` command: argument parsing only; the work lives in the modules it calls.

    hvdkit train recipes/digits_mlp.yaml --framework torch -np 2
    hvdkit train recipes/digits_mlp.yaml --framework tensorflow -np 2 --controller gloo
    hvdkit info
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from hvdkit import __version__
from hvdkit.adapters.base import FRAMEWORKS
from hvdkit.bench.commands import COMMANDS as STUDY_COMMANDS
from hvdkit.bench.commands import add_parsers as add_study_parsers
from hvdkit.builders import check_builders
from hvdkit.data.checks import check_data
from hvdkit.defaults import apply_machine_defaults
from hvdkit.errors import UserError
from hvdkit.interrupts import finish_stopped
from hvdkit.launcher import LaunchOptions, check_horovod, run_job, warn_oversubscription
from hvdkit.layout import ParallelLayout
from hvdkit.machines import elastic_settings
from hvdkit.mpirun import parse_mpi_args
from hvdkit.recipe import Recipe, load_recipe
from hvdkit.rundir import prepare_run_dir
from hvdkit.worker import in_horovod_job, rank_from_env, run_worker
from hvdkit.world import JOB_STARTED, default_threads

VALUE_MAY_START_WITH_DASH = ("--mpi-args",)
LAUNCHER_REPORTS = "HVDKIT_LAUNCHER_REPORTS"  # the launcher prints the `done` line itself


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
    p.add_argument("--mpi-args", default="", metavar="ARGS",
                   help="extra arguments for mpirun, e.g. --mpi-args '--report-bindings'; "
                        "an --mca parameter hvdkit also sets takes your value")
    p.add_argument("--launcher", choices=("auto", "ray"), default="auto",
                   help="auto: mpirun on one host with MPI, else horovodrun; ray: Horovod's "
                        "RayExecutor on a Ray cluster (make setup-ray)")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="--launcher ray: the cluster to join (default: start one here)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show every rank's output raw (launcher tags and start-up lines too)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress output")
    p.add_argument("--resume", nargs="?", const="latest", metavar="PATH",
                   help="resume from a checkpoint: the newest good one of --run-dir, or a run "
                        "folder, checkpoint folder or file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --run-dir (its files are deleted first)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="no TensorBoard event files in <run dir>/tensorboard")
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


def _attach_values(argv: list[str]) -> list[str]:
    """`--mpi-args '--report-bindings'` as `--mpi-args=--report-bindings`: argparse would
    take a value starting with `-` for an option of its own."""
    out: list[str] = []
    words = iter(argv)
    for word in words:
        if word in VALUE_MAY_START_WITH_DASH:
            value = next(words, None)
            out.append(word if value is None else f"{word}={value}")
        else:
            out.append(word)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hvdkit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hvdkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    add_study_parsers(sub)  # scale, bench allreduce, tune (hvdkit.bench.commands)
    sub.add_parser("info", help="versions, Horovod's build, ranks, threads and launch defaults")
    exp = sub.add_parser("export", help="write a run's trained model in its framework's format")
    exp.add_argument("run", help="the run folder (runs/<run>)")
    exp.add_argument("--format", default="native", help="native: PyTorch state_dict / .keras")
    exp.add_argument("--out", help="where to write it (default <run>/export)")
    return parser.parse_args(_attach_values(sys.argv[1:] if argv is None else argv))


def _recipe(args: argparse.Namespace) -> Recipe:
    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    return load_recipe(args.recipe, overrides)


def train(args: argparse.Namespace) -> int:
    if not in_horovod_job():  # the job starts here: summary.json's wall_time counts from now
        os.environ[JOB_STARTED] = str(time.time())
    if args.framework not in FRAMEWORKS:
        raise UserError(f"unknown framework {args.framework!r}; valid: {', '.join(FRAMEWORKS)}")
    if args.launcher == "ray" and not in_horovod_job():
        check_ray_flags(args)
    elif args.ray_address:
        raise UserError("--ray-address needs --launcher ray")
    # Flags left unset take this machine's tuned defaults (hvdkit tune), else the built-ins.
    machine = None if in_horovod_job() else apply_machine_defaults(args)
    recipe = _recipe(args)  # every recipe error surfaces here, before any worker starts
    if args.resume == "latest" and not args.run_dir:
        raise UserError("--resume without a path needs --run-dir (the run to resume), "
                        "or give the run folder: --resume runs/<run>")
    if in_horovod_job():
        if "HVDKIT_LAUNCH" not in os.environ and args.run_dir and rank_from_env() == 0:
            prepare_run_dir(args.run_dir, args.resume, args.overwrite)  # srun, mpirun
        return train_worker(args, recipe, json.loads(os.environ.get("HVDKIT_LAUNCH", "{}")))
    check_data(recipe)  # files read and checked against the model, before any worker starts
    options = _launch_options(args, machine)
    options.validate()
    ParallelLayout.from_recipe(recipe, options.np, options.launch_controller, options.elastic,
                               source=args.recipe)
    launching = options.np > 1 or options.multi_host or options.elastic
    # A bad builder fails here, once, not on every rank (one process: imported, not called).
    check_builders(recipe, args.framework, call=launching)
    if launching and recipe.folder and (recipe.model.builder or recipe.data.builder):
        # The ranks on every host import builders from the recipe's folder (hvdkit.builders).
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = recipe.folder + (os.pathsep + path if path else "")
    from hvdkit.trainer import default_run_dir

    run_dir = args.run_dir or str(default_run_dir(recipe, args.framework, args.np))
    prepare_run_dir(run_dir, args.resume, args.overwrite)  # before check_horovod loads a framework
    check_horovod(args.framework, options.controller)
    warn_oversubscription(options)
    if options.elastic:  # threads per rank follow the ranks on each machine, not per host name
        env, options.network_interface = elastic_settings(
            str(options.host_discovery_script), options.np, options.network_interface)
        os.environ.update(env)
    if args.launcher == "ray":
        return _train_on_ray(args, options, run_dir)
    if options.np == 1 and not (options.multi_host or options.elastic):
        # One rank needs no launcher: Horovod starts as an MPI singleton in this process.
        args.run_dir = run_dir
        return train_worker(args, recipe, {"launched_by": "in-process", "np": 1,
                                              "machine_defaults": machine})
    return run_job(options, _worker_command(args, run_dir), verbose=args.verbose)


def check_ray_flags(args: argparse.Namespace) -> None:
    """--launcher ray: Gloo, and the hosts are the Ray cluster's."""
    if args.controller not in (None, "gloo"):
        raise UserError("--launcher ray runs Horovod on Gloo; leave out --controller mpi")
    if args.hosts or args.hostfile or args.elastic:
        raise UserError("--launcher ray takes its hosts from the Ray cluster: leave out "
                        "--hosts, --hostfile and --elastic")
    args.controller = "gloo"


def _train_on_ray(args: argparse.Namespace, options: LaunchOptions, run_dir: str) -> int:
    from hvdkit.ray_launcher import run_ray_job

    threads = args.threads or default_threads(options.np)
    argv = _worker_command(args, str(Path(run_dir).resolve()))[3:]  # from `train` on
    launch = json.dumps({**options.describe(), "launched_by": "ray",
                         "ray_address": args.ray_address})
    print(f"[hvdkit] launching on Ray ({args.ray_address or 'a local instance'}): -np "
          f"{options.np}, {threads} CPU(s) per rank: hvdkit {shlex.join(argv)}",
          file=sys.stderr, flush=True)
    code = run_ray_job(options.np, threads, argv, args.ray_address,
                       {"HVDKIT_LAUNCH": launch, LAUNCHER_REPORTS: "1"})
    summary = Path(run_dir) / "summary.json"
    if code == 0 and summary.is_file():  # Ray may drop an actor's last lines at shutdown
        print(done_line(args.framework, json.loads(summary.read_text())), flush=True)
    return code


def _launch_options(args: argparse.Namespace, machine: dict | None) -> LaunchOptions:
    return LaunchOptions(
        np=args.np, controller=args.controller, hosts=args.hosts, hostfile=args.hostfile,
        network_interface=args.network_interface, yield_when_idle=args.yield_when_idle,
        mpi_args=parse_mpi_args(args.mpi_args), elastic=args.elastic, min_np=args.min_np,
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
    if not args.tensorboard:
        worker.append("--no-tensorboard")
    if args.resume:
        worker += ["--resume", args.resume]
    if args.elastic:
        worker.append("--elastic")
    return worker


def done_line(framework: str, summary: dict) -> str:
    accuracy = summary.get("test_accuracy")
    shown = f"test accuracy {accuracy:.4f}" if accuracy is not None else "no evaluation"
    return (f"[hvdkit] done: {framework} np={summary['np']} {shown}, "
            f"{summary['samples_per_sec']:.0f} samples/s, run files in {summary.get('run_dir')}")


def train_worker(args: argparse.Namespace, recipe: Recipe, launch: dict) -> int:
    """Train in this process (one rank of a job); failures name the rank, exit non-zero."""
    from hvdkit.trainer import Trainer

    def train_here() -> int:
        # Started by mpirun or srun directly: rank 0 picks the run folder if none was given.
        trainer = Trainer(recipe, args.framework, run_dir=args.run_dir or "auto",
                          progress=args.progress, tensorboard=args.tensorboard,
                          launch_info=launch or {"launched_by": "external"},
                          resume=args.resume, elastic=args.elastic)
        summary = trainer.fit()
        if summary.get("interrupted"):  # SIGINT/SIGTERM: stopped at a step with a checkpoint
            return finish_stopped(trainer)
        if trainer.world is not None and trainer.world.is_root \
                and not os.environ.get(LAUNCHER_REPORTS):
            print(done_line(args.framework, summary), flush=True)
        return 0

    return run_worker(train_here)


def info(_: argparse.Namespace) -> int:
    from hvdkit.info import describe

    print(describe())
    return 0


def export(args: argparse.Namespace) -> int:
    from hvdkit.export import export_run

    export_run(args.run, args.format, args.out)
    return 0


COMMANDS = {"train": train, "info": info, "export": export, **STUDY_COMMANDS}


def main(argv: list[str] | None = None) -> int:
    """The `hvdkit` command (argv None: this process's own arguments)."""
    args = parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
    except UserError as exc:
        print(f"hvdkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before a job started (or after it): no traceback
        print("hvdkit: interrupted", file=sys.stderr)
        return 130
    if argv is None and args.command == "train" and code == 0:
        # This process trained (a rank, or -np 1): end it without the slow interpreter teardown.
        from hvdkit.quick_exit import quick_exit

        quick_exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
