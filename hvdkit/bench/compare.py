"""Measured runs beside the model: where a run's time went, and `hvdkit scale --predict`.

The breakdown of a timed window (hvdkit.training.timing), from hvdkit's own timers:

    exposed communication   the exchange's wait (and update) after backward: comm_seconds
    compute                 the rest of the train steps: step_seconds − comm_seconds
    the rest                outside the train steps (loading, logging): seconds − step_seconds

TensorFlow compiles its exchange into its step, so there the first two are one figure
(`compute_share` holds both, `comm_share` is absent) unless Horovod's timeline was recorded.

The overlay calibrates compute on the sweep's compute-only point at the same np (`--sync none`)
where there is one, else on each configuration's own np=1 point, and the link with one 2-rank
allreduce job, then predicts every point that exchanges.
"""

from __future__ import annotations

import math
from typing import Any

from hvdkit.bench.collectives import Cluster, Link
from hvdkit.bench.perfmodel import measured_workload, predict_step
from hvdkit.errors import UserError
from hvdkit.runtime.world import cores


def breakdown(timed: dict[str, Any]) -> dict[str, float]:
    """Shares of the timed window: compute, exposed communication, the rest."""
    seconds, steps = timed.get("seconds"), timed.get("step_seconds")
    if not seconds or steps is None:
        return {}
    comm = timed.get("comm_seconds")
    comm = comm if comm is not None and math.isfinite(comm) else None
    out = {"compute_share": (steps - (comm or 0.0)) / seconds,
           "rest_share": max(0.0, seconds - steps) / seconds}
    if comm is not None:
        out["exposed_comm_share"] = comm / seconds
    return out


def exchange_of(row: dict[str, Any]) -> str:
    """The model's exchange for a sweep configuration."""
    if row["sync"] in ("ps", "zero1"):
        return row["sync"]
    return {"none": "ring", "fp16": "fp16", "powersgd": "powersgd"}[row["compression"]]


def overlay(results: list[dict[str, Any]], link: Link) -> None:
    """Add `predicted_samples_per_sec` and `prediction_error` (predicted ÷ measured − 1) to
    each aggregated sweep row that exchanges: compute calibrated on the compute-only point of
    its framework and controller at the same np where the sweep ran `--sync none` (the ranks
    sharing the host as in the row, with their steps' spread for the stragglers), else on
    its configuration's np=1 row."""
    keys = ("framework", "controller", "sync", "compression")
    for row in results:
        if row["sync"] == "none":  # a calibration point itself: nothing to exchange
            continue
        n = row["np"]
        ceiling = next((r for r in results if r["sync"] == "none" and r["np"] == n
                        and all(r[k] == row[k] for k in ("framework", "controller"))), None)
        base = ceiling or next((r for r in results if r["np"] == 1
                                and all(r[k] == row[k] for k in keys)), None)
        if base is None:
            raise UserError("--predict calibrates compute on each configuration at np=1 or "
                            "on --sync none at the same np: add 1 to --np")
        per_sample = base["np"] / base["samples_per_sec"]  # a rank's seconds per sample
        jitter = (ceiling or {}).get("step_jitter") or 0.0
        work = measured_workload(row["parameters"], per_sample, row["framework"],
                                 row.get("device"), n, row.get("threads_per_rank") or 1,
                                 cores(), jitter=jitter)
        predicted = predict_step(work, Cluster(n, 1, link, link), exchange_of(row),
                                 row["global_batch"] / n)
        row["predicted_samples_per_sec"] = predicted["samples_per_sec"]
        row["prediction_error"] = predicted["samples_per_sec"] / row["samples_per_sec"] - 1
