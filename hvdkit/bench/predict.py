"""`hvdkit predict`: step time, throughput and scaling efficiency over worker counts and layouts,
for each gradient exchange and pipeline schedule (the model: hvdkit.bench.perfmodel).

    hvdkit predict recipes/synthetic_mlp.yaml -f torch --np 1,2,8,64 --network 25Gbit/s,10us
    hvdkit predict examples/predict_resnet50.yaml            # a described cluster

A recipe is calibrated here: one short run of as many ranks as a host will hold, with the
exchange off, gives the compute per sample under the job's conditions; one 2-rank allreduce
job the link within this host (α from mpi4py's small messages, β from Horovod's large ones);
one 2-rank job of the model's own gradient exchange what it costs on the host besides the link
(the fusion buffer's copies, the casts: `perfmodel.host_per_byte`). `--compute-seconds` and
`--intra` give compute and link instead (then the host's share is not calibrated). Writes
prediction.json, prediction.csv and prediction.png to --out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from hvdkit.bench.calibrate import calibrate_exchange, calibrate_link, calibrate_readiness
from hvdkit.bench.collectives import Cluster, Link
from hvdkit.bench.fusion import Horovod
from hvdkit.bench.perfmodel import (
    EXCHANGES,
    Workload,
    host_per_byte,
    measured_workload,
    on_gpu,
    predict_pipeline,
    predict_step,
)
from hvdkit.errors import UserError
from hvdkit.runtime.world import cores

COLUMNS = ("exchange", "ranks", "ranks_per_host", "hosts", "batch_per_rank", "compute_s",
           "comm_s", "exposed_comm_s", "bubble", "step_s", "samples_per_sec", "efficiency")
ASSUMPTIONS = (
    "compute per step is linear in the batch per rank (fixed + b x per-sample), calibrated "
    "with as many ranks on this host as a host will hold and the exchange off; the same at "
    "every scale; a synchronous step waits for the slowest rank: the steps' spread (robust "
    "standard deviation / mean) times the expected maximum of n normals",
    "backward is 2/3 of compute unless given; PyTorch hands each gradient to Horovod when "
    "backward readies it (calibrated: measured on the model; else reverse order, in "
    "proportion to the bytes), TensorFlow all after "
    "backward; a collective runs beside backward only where a core is free for it (a GPU, "
    "or CPU cores > ranks x threads), otherwise backward pauses while it works on the host "
    "(all of it within a host; over a network the host's share, not the transfer)",
    "a flat ring: each hop alpha-beta; across hosts the ring runs at the inter-host link; "
    "a given rate is the collective's payload (TCP over Ethernet at MTU 1500 gets 94% of the "
    "line rate); a token-bucket link's burst passes at once after compute refilled it",
    "Horovod fuses the ready gradients each cycle (its phase uniform against the step) into "
    "buffers <= the fusion threshold; PowerSGD, ZeRO-1 and the parameter server exchange "
    "after backward, fully exposed",
    "calibrated on a CPU host: what the model's own exchange took between 2 ranks here beyond "
    "the cycle wait and the link's transfer (fusion copies, casts, reductions) is charged per "
    "wire byte at every rank count and link",
    "PowerSGD moves 1/ratio of the gradient (P then Q); its matrix products are not "
    "counted; ZeRO-1 is a reduce-scatter of gradients + an all-gather of parameters, its "
    "sharded optimizer not credited; the parameter server's host link carries (g+p)(n-1)",
    "pipelines: the schedule simulator, each F and B one point-to-point message of the "
    "activations, B and W each half of backward; data-parallel allreduce after the pipeline",
    "no congestion, no topology beyond two link classes, no GPU/CPU copies or kernels "
    "launched for communication, no memory limits",
)


def layouts(nps: list[int], ranks_per_host: int) -> list[tuple[int, int]]:
    """(ranks per host, hosts) for each count: one host up to `ranks_per_host`, then full
    hosts (a count that does not fill whole hosts is an error)."""
    out = []
    for n in nps:
        if n < 1:
            raise UserError(f"--np {n}: counts start at 1")
        if n <= ranks_per_host:
            out.append((n, 1))
        elif n % ranks_per_host:
            raise UserError(f"--np {n} does not fill hosts of {ranks_per_host} ranks; "
                            "choose multiples of --ranks-per-host")
        else:
            out.append((ranks_per_host, n // ranks_per_host))
    return out


def prediction_rows(work: Workload, shapes: list[tuple[int, int]], intra: Link, inter: Link,
                    batch: float, exchanges: tuple[str, ...] = EXCHANGES,
                    horovod: Horovod | None = None, pipeline: dict[str, Any] | None = None,
                    mode: str = "weak") -> list[dict[str, Any]]:
    """One row per layout and exchange (and pipeline schedule). `batch`: per rank (weak) or
    the global batch (strong, split over the data-parallel replicas)."""
    horovod = horovod or Horovod()
    single = predict_step(work, Cluster(1, 1, intra, inter), "ring", batch)["samples_per_sec"]
    rows = []
    for rph, hosts in shapes:
        cluster = Cluster(rph, hosts, intra, inter)
        n = cluster.ranks
        for exchange in exchanges:
            per_rank = batch / n if mode == "strong" else batch
            rows.append({"exchange": exchange, "ranks_per_host": rph, "hosts": hosts,
                         **predict_step(work, cluster, exchange, per_rank, horovod)})
        for schedule in (pipeline or {}).get("schedules", ()):
            stages, m = int(pipeline["stages"]), int(pipeline["microbatches"])
            virtual = int(pipeline.get("virtual", 2)) if schedule == "interleaved" else 1
            if n % stages or (schedule == "interleaved" and m % stages):
                continue
            per_replica = batch / (n // stages) if mode == "strong" else batch
            rows.append({"exchange": f"pipeline:{schedule}", "ranks_per_host": rph,
                         "hosts": hosts, **predict_pipeline(
                work, cluster, schedule, stages, m, per_replica, virtual, horovod)})
    for row in rows:  # against one rank alone at the batch it would train (weak or strong)
        row["efficiency"] = row["samples_per_sec"] / (row["ranks"] * single)
    return rows


# -- calibration on this machine ------------------------------------------------------------


def calibrate_compute(recipe: str, framework: str, batch: int, threads: int | None,
                      steps: int, overrides: list[str], out: Path,
                      ranks: int = 1, controller: str = "mpi") -> dict[str, Any]:
    """One `hvdkit train` job of `ranks` ranks on this host at `batch` per rank with the
    exchange switched off (`parallel.sync none`): compute under the conditions a job's ranks
    on this host will have (sharing its cores and memory, Horovod's loop running), without
    the communication the model adds (`controller`: the job's, whose loop runs beside
    compute). Seconds per step (barrier-timed, warm-up out), per
    sample, the steps' spread (standard deviation ÷ mean) and the model's gradient tensors."""
    from hvdkit.bench.scale import SweepSpec, run_trial

    spec = SweepSpec(recipe=recipe, nps=[ranks], frameworks=[framework], mode="weak",
                     steps=steps, threads=threads or 1,
                     overrides=[*overrides, f"train.batch_size={batch}"], out=str(out))
    trial = {"framework": framework, "controller": controller, "sync": "none",
             "compression": "none", "np": ranks}
    row = run_trial(spec, trial, 0)
    step = row["global_batch"] / row["samples_per_sec"]  # every rank's step, in parallel
    return {"step_s": step, "per_sample_s": step / batch, "batch": batch, "ranks": ranks,
            "parameters": row["parameters"], "tensors": row.get("parameter_tensors") or [],
            "jitter": row.get("step_jitter") or 0.0,
            "device": row.get("device") or "cpu",
            "threads": row.get("threads_per_rank") or threads or 1}


# -- the command ----------------------------------------------------------------------------


def write_prediction(result: dict[str, Any], out: Path) -> list[Path]:
    from hvdkit.bench.report import _pyplot, _save, write_csv

    out.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    (out / "prediction.json").write_text(json.dumps(result, indent=2) + "\n")
    write_csv(out / "prediction.csv", rows, COLUMNS)
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for exchange in dict.fromkeys(r["exchange"] for r in rows):
        line = [r for r in rows if r["exchange"] == exchange]
        xs = [r["ranks"] for r in line]
        a.plot(xs, [r["samples_per_sec"] for r in line], marker="o", label=exchange)
        b.plot(xs, [r["efficiency"] for r in line], marker="o", label=exchange)
    for ax, label in ((a, "samples/s (all ranks)"), (b, "scaling efficiency")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("workers (ranks)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    a.set_yscale("log")
    b.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    b.legend(fontsize=8)
    fig.suptitle(f"Predicted: {result['target']}")
    return [out / "prediction.json", out / "prediction.csv", _save(fig, out / "prediction.png")]


def run_predict(args: Any) -> dict[str, Any]:
    from hvdkit.bench.describe import is_description, load_description

    out = Path(args.out)
    inputs: dict[str, Any] = {}
    if is_description(args.target):
        d = load_description(args.target)
        work, batch, intra, inter, horovod, pipeline = (d.work, d.batch, d.intra, d.inter,
                                                        d.horovod, d.pipeline)
        shapes = [(1, 1)] + [(d.devices_per_host, h) for h in d.hosts]
        shapes = list(dict.fromkeys(shapes))
        mode = "weak"
    else:
        work, batch, intra, inputs = _calibrated(args, out)
        if any(n > args.ranks_per_host for n in args.nps) and args.network is None:
            raise UserError("--np spans hosts: give --network BANDWIDTH,LATENCY for the link "
                            "between hosts, e.g. --network 25Gbit/s,10us")
        inter = args.network or intra
        shapes, horovod, mode = layouts(args.nps, args.ranks_per_host), Horovod(), args.mode
        pipeline = ({"stages": args.stages, "microbatches": args.microbatches,
                     "schedules": args.schedules} if args.stages else None)
    rows = prediction_rows(work, shapes, intra, inter, batch, tuple(args.exchanges), horovod,
                           pipeline, mode)
    result = {"target": args.target, "mode": mode, "batch": batch, "workload": asdict(work),
              "intra": asdict(intra), "inter": asdict(inter), "horovod": asdict(horovod),
              "calibration": inputs, "assumptions": list(ASSUMPTIONS), "rows": rows}
    write_prediction(result, out)
    return result


def calibrate_workload(recipe: str, framework: str, batch: int, threads: int | None,
                       steps: int, overrides: list[str], out: Path, ranks: int,
                       link: Link | None, controller: str = "mpi",
                       **given: Any) -> tuple[Workload, dict[str, Any]]:
    """A recipe's workload calibrated on this host: compute from `calibrate_compute` and, with
    `link` (the one between 2 ranks here) on a CPU host, the host's share of its exchange
    from `calibrate_exchange` (the worker exchanges host memory). `given`: other Workload
    fields. PyTorch's: when each gradient is ready from `calibrate_readiness`. Returns the
    workload and what was measured ("compute", "ready", "exchange_s")."""
    print(f"[predict] calibrating compute: {framework} np={ranks} with the exchange off, "
          f"batch {batch} per rank, {steps} steps", flush=True)
    compute = calibrate_compute(recipe, framework, batch, threads, steps, overrides, out, ranks,
                                controller)
    inputs: dict[str, Any] = {"compute": compute}
    if framework == "torch" and compute["tensors"]:
        print("[predict] timing when each gradient is ready in backward (PyTorch's hooks)",
              flush=True)
        inputs["ready"] = calibrate_readiness(recipe, batch, threads, overrides, out)
        given = {"ready": tuple(inputs["ready"]), **given}
    work = measured_workload(compute["parameters"], compute["per_sample_s"], framework,
                             compute["device"], ranks, compute["threads"], cores(),
                             tensors=tuple(compute["tensors"]), jitter=compute["jitter"],
                             **given)
    if link is not None and compute["tensors"] and not on_gpu(compute["device"]):
        print("[predict] calibrating the model's exchange: its gradients between 2 ranks",
              flush=True)
        inputs["exchange_s"] = calibrate_exchange(out, compute["tensors"], compute["step_s"],
                                                  controller)
        work = replace(work, host_per_byte=host_per_byte(inputs["exchange_s"], work, link))
    return work, inputs


def _calibrated(args: Any, out: Path) -> tuple[Workload, float, Link, dict[str, Any]]:
    from hvdkit.recipe import load_recipe

    recipe = load_recipe(args.target, args.overrides)
    batch = args.batch or recipe.train.batch_size
    inputs: dict[str, Any] = {}
    per_host = min(args.ranks_per_host, max(args.nps))  # the ranks that share a host's cores
    if args.intra is None:
        print("[predict] calibrating the link within this host: 2-rank allreduce", flush=True)
        intra = calibrate_link(out / "calibration")
        inputs["intra"] = asdict(intra)
    else:
        intra = args.intra
    given = {"powersgd_ratio": args.powersgd_ratio, "activation_bytes": args.activation_bytes}
    if args.compute_seconds is None:  # the host's share only over a link measured here
        work, measured = calibrate_workload(
            args.target, args.framework, batch, args.threads, args.steps, args.overrides,
            out / "calibration", per_host, None if args.intra else intra, **given)
        inputs.update(measured)
    else:  # a device's compute, whose host cores are free
        if args.parameters is None:
            raise UserError("--compute-seconds needs --parameters (the model's count)")
        work = measured_workload(args.parameters, args.compute_seconds, args.framework, "gpu",
                                 per_host, 1, cores(), **given)
    return work, float(batch), intra, inputs
