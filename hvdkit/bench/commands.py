"""The study subcommands of `hvdkit` — `scale`, `bench allreduce`, `tune` — argument parsing only.

    hvdkit scale recipes/synthetic_cnn.yaml --np 1,2 --framework torch,tensorflow --threads 1
    hvdkit bench allreduce -np 2 --controller mpi,gloo
    hvdkit tune recipes/synthetic_cnn.yaml -np 2
    hvdkit predict recipes/synthetic_mlp.yaml -f torch --np 1,2,8,64 --network 25Gbit/s,10us
"""

from __future__ import annotations

import argparse

from hvdkit.errors import UserError


def _list(kind: type = str):
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",") if item]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list: {text!r}") \
                from None
    return parse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scale", help="scaling sweep: throughput, speedup, efficiency, plots")
    p.add_argument("recipe")
    p.add_argument("--np", "-np", dest="nps", type=_list(int), default=[1, 2],
                   help="rank counts, e.g. 1,2,4")
    p.add_argument("--framework", "-f", dest="frameworks", type=_list(), default=["torch"])
    p.add_argument("--controller", dest="controllers", type=_list(), default=["mpi"])
    p.add_argument("--sync", dest="syncs", type=_list(), default=["allreduce"],
                   help="allreduce, ps (parameter server), zero1 (sharded optimizer), none "
                        "(no exchange: the compute-only ceiling at each np), or a list: "
                        "allreduce,none")
    p.add_argument("--compression", dest="compressions", type=_list(), default=["none"],
                   help="none, fp16, powersgd, or a list: none,fp16,powersgd")
    p.add_argument("--mode", choices=("strong", "weak"), default="strong")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--steps", type=int, default=0, help="steps per trial (0: the recipe's)")
    p.add_argument("--to-accuracy", action="store_true",
                   help="train each configuration to the end; report accuracy and time to it")
    p.add_argument("--threads", type=int, help="intra-op threads per rank")
    p.add_argument("--timeline", action="store_true",
                   help="record Horovod's timeline; report its allreduce share")
    p.add_argument("--predict", action="store_true",
                   help="overlay the performance model (calibrated at np=1) with its error")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="scaling", help="report folder (default ./scaling)")

    b = sub.add_parser("bench", help="microbenchmarks")
    bsub = b.add_subparsers(dest="bench", required=True)
    a = bsub.add_parser("allreduce", help="latency, algbw/busbw, Horovod vs mpi4py, fusion")
    a.add_argument("-np", "--np", dest="np", type=int, default=2)
    a.add_argument("--controller", dest="controllers", type=_list(), default=["mpi", "gloo"])
    a.add_argument("--sizes", type=_list(int), help="bytes, e.g. 4,4096,67108864")
    a.add_argument("--cycle-times", type=_list(float), default=[1.0, 5.0],
                   help="HOROVOD_CYCLE_TIME values (ms) to compare")
    a.add_argument("--out", default="bench-allreduce")

    add_predict_parser(sub)

    t = sub.add_parser("tune", help="short trials of launch settings; save the best as defaults")
    t.add_argument("recipe")
    t.add_argument("-np", "--np", dest="np", type=int, default=2)
    t.add_argument("--framework", "-f", default="torch")
    t.add_argument("--steps", type=int, default=30, help="steps per trial")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--out", default="tune", help="folder for the trials' runs and table")
    t.add_argument("--no-save", dest="save", action="store_false",
                   help="print the table only; keep this machine's defaults as they are")


def _link(text: str):
    from hvdkit.bench.collectives import parse_link

    try:
        return parse_link(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_predict_parser(sub: argparse._SubParsersAction) -> None:
    from hvdkit.bench.perfmodel import EXCHANGES

    p = sub.add_parser("predict", help="predicted step time, throughput and efficiency at "
                                       "scale (a recipe calibrated here, or a description)")
    p.add_argument("target", help="a recipe, or a description YAML (hvdkit/bench/describe.py)")
    p.add_argument("--framework", "-f", default="torch", help="the framework to calibrate")
    p.add_argument("--np", "-np", dest="nps", type=_list(int), default=[1, 2, 8, 64, 512])
    p.add_argument("--ranks-per-host", type=int, default=8)
    p.add_argument("--network", type=_link, help="link between hosts: BANDWIDTH,LATENCY, "
                                                 "e.g. 25Gbit/s,10us")
    p.add_argument("--intra", type=_link, help="link within a host (default: measured here)")
    p.add_argument("--compute-seconds", type=float, help="seconds per sample of one rank "
                                                         "(default: measured here)")
    p.add_argument("--parameters", type=int, help="the model's parameters (with "
                                                  "--compute-seconds)")
    p.add_argument("--batch", type=int, help="samples per rank (default: the recipe's)")
    p.add_argument("--mode", choices=("weak", "strong"), default="weak")
    p.add_argument("--exchanges", type=_list(), default=list(EXCHANGES),
                   help=f"any of {','.join(EXCHANGES)}")
    p.add_argument("--stages", type=int, default=0, help="pipeline stages (0: none)")
    p.add_argument("--microbatches", type=int, default=8)
    p.add_argument("--schedules", type=_list(), default=["gpipe", "1f1b", "interleaved",
                                                         "zb-h1"])
    p.add_argument("--activation-bytes", type=float, default=0.0,
                   help="bytes per sample crossing a pipeline cut (0: messages cost α only)")
    p.add_argument("--powersgd-ratio", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=30, help="steps of the calibration run")
    p.add_argument("--threads", type=int, help="threads of the calibration run (1)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="prediction", help="folder for prediction.json/csv/png")


def predict(args: argparse.Namespace) -> int:
    from hvdkit.bench.perfmodel import EXCHANGES
    from hvdkit.bench.predict import run_predict

    bad = [e for e in args.exchanges if e not in EXCHANGES]
    if bad:
        raise UserError(f"--exchanges {bad[0]!r}; valid: {', '.join(EXCHANGES)}")
    result = run_predict(args)
    print(f"[predict] {result['target']} ({result['mode']} scaling, batch {result['batch']:g}"
          " per rank)")
    print(f"  {'exchange':<20} {'ranks':>6} {'hosts':>5} {'step ms':>9} {'exposed ms':>10} "
          f"{'samples/s':>11} {'efficiency':>10}")
    for r in result["rows"]:
        print(f"  {r['exchange']:<20} {r['ranks']:>6} {r['hosts']:>5} {r['step_s'] * 1e3:9.2f} "
              f"{r['exposed_comm_s'] * 1e3:10.2f} {r['samples_per_sec']:11.1f} "
              f"{r['efficiency']:10.3f}")
    print("  assumptions:")
    for line in result["assumptions"]:
        print(f"  - {line}")
    print(f"[predict] wrote {args.out}/prediction.json, prediction.csv, prediction.png")
    return 0


def scale(args: argparse.Namespace) -> int:
    from hvdkit.bench.scale import SweepSpec, sweep

    spec = SweepSpec(recipe=args.recipe, nps=args.nps, frameworks=args.frameworks,
                     controllers=args.controllers, syncs=args.syncs,
                     compressions=args.compressions, mode=args.mode, repeats=args.repeats,
                     steps=args.steps, to_accuracy=args.to_accuracy, threads=args.threads,
                     timeline=args.timeline, predict=args.predict, overrides=args.overrides,
                     out=args.out)
    result = sweep(spec)
    for row in result["results"]:
        print(f"  {row['framework']:<10} {row['controller']:<4} {row['sync']:<9} "
              f"{row['compression']:<4} np={row['np']}: {row['samples_per_sec']:9.0f} samples/s"
              f"  efficiency {row['efficiency']:.3f}" + (
                  f"  predicted {row['predicted_samples_per_sec']:9.0f} "
                  f"({row['prediction_error']:+.1%})" if args.predict else ""))
    print(f"[scale] report: {args.out}/report.md")
    return 0


def bench(args: argparse.Namespace) -> int:
    from hvdkit.bench.allreduce import run_allreduce

    if args.bench != "allreduce":
        raise UserError(f"unknown benchmark {args.bench!r}")
    result = run_allreduce(args.np, tuple(args.controllers), args.sizes, cycle_times=tuple(
        args.cycle_times), out=args.out)
    for key, value in result["summary"].items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"[allreduce] report: {args.out}/report.md")
    return 0


def tune(args: argparse.Namespace) -> int:
    from hvdkit.bench.tune import run_tune

    run_tune(args.recipe, np_=args.np, framework=args.framework, steps=args.steps,
             overrides=args.overrides, out=args.out, save=args.save)
    return 0


COMMANDS = {"scale": scale, "bench": bench, "tune": tune, "predict": predict}
