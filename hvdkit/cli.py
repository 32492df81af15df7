"""The `hvdkit` command: argument parsing only; each command is one call into the package.

    hvdkit train recipes/digits_mlp.yaml --framework torch -np 2
    hvdkit train recipes/digits_mlp.yaml --framework tensorflow -np 2 --controller gloo
    hvdkit info
    hvdkit export runs/<run>;  hvdkit generate runs/<run> --prompt "def "
"""

from __future__ import annotations

import argparse
import sys

from hvdkit.bench.commands import COMMANDS as STUDY_COMMANDS
from hvdkit.bench.commands import add_parsers as add_study_parsers
from hvdkit.errors import UserError

VALUE_MAY_START_WITH_DASH = ("--mpi-args",)


class VersionAction(argparse.Action):
    """--version: the version and the checkout (asks git only when asked)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="the version and the checkout")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from hvdkit.version import describe_version

        print(describe_version())
        parser.exit()


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
    p.add_argument("--timeline", action="store_true",
                   help="write Horovod's timeline to <run dir>/timeline.json")


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


def build_parser() -> argparse.ArgumentParser:
    """The `hvdkit` parser with every command (the docs' CLI reference is generated from it)."""
    parser = argparse.ArgumentParser(prog="hvdkit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    add_study_parsers(sub)  # scale, bench allreduce, tune (hvdkit.bench.commands)
    sub.add_parser("info", help="versions, Horovod's build, ranks, threads and launch defaults")
    exp = sub.add_parser("export", help="write a run's trained model in its framework's format")
    exp.add_argument("run", help="the run folder (runs/<run>)")
    exp.add_argument("--format", default="native",
                     help="native: torch.export program and state_dict / TF SavedModel and .keras")
    exp.add_argument("--out", help="where to write it (default <run>/export)")
    gen = sub.add_parser("generate", help="sample text from a language-model run (a GPT)")
    gen.add_argument("run", help="the run folder (runs/<run>)")
    gen.add_argument("--prompt", required=True, help="the text to continue")
    gen.add_argument("--tokens", type=int, default=200, help="bytes to sample (default 200)")
    gen.add_argument("--temperature", type=float, default=0.8,
                     help="softmax temperature; 0 takes the most likely byte (default 0.8)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    return parser.parse_args(_attach_values(sys.argv[1:] if argv is None else argv))


def train(args: argparse.Namespace) -> int:
    from hvdkit.launch.train import run_training

    return run_training(args)


def info(_: argparse.Namespace) -> int:
    from hvdkit.launch.info import describe

    print(describe())
    return 0


def export(args: argparse.Namespace) -> int:
    from hvdkit.training.export import export_run

    export_run(args.run, args.format, args.out)
    return 0


def generate(args: argparse.Namespace) -> int:
    from hvdkit.training.generate import generate as sample

    print(sample(args.run, args.prompt, args.tokens, args.temperature, args.seed), flush=True)
    return 0


COMMANDS = {"train": train, "info": info, "export": export, "generate": generate,
            **STUDY_COMMANDS}


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
        from hvdkit.runtime.quick_exit import quick_exit

        quick_exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
