"""`hvdkit scale`: a scaling sweep — each configuration a real `hvdkit train` job, repeated.

    hvdkit scale recipes/synthetic_cnn.yaml --np 1,2 --framework torch,tensorflow --threads 1
    hvdkit scale recipes/synthetic_mlp.yaml --np 1,2 --sync allreduce,ps --compression none,fp16

Throughput is the barrier-timed window of every run (hvdkit.training.timing): samples all ranks
processed ÷ seconds, warm-up steps out. Strong scaling keeps the global batch (the recipe's
batch at one rank, split over the ranks); weak keeps the per-rank batch. Every point runs the
same threads per rank — `--threads`, else this host's cores ÷ the largest -np — so that np=1
is not measured on every core against np=N on one core each. Speedup and efficiency compare a
configuration (framework, controller, sync, compression) with itself at its smallest rank
count, never with another configuration; `vs_allreduce` puts ps or fp16 beside plain
ring-allreduce at the same rank count. comm_share is left out at np=1, where nothing is
exchanged.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hvdkit.adapters.base import FRAMEWORKS
from hvdkit.bench.compare import breakdown, overlay
from hvdkit.bench.jobs import run_logged
from hvdkit.bench.timeline import allreduce_share
from hvdkit.errors import UserError
from hvdkit.launch.options import CONTROLLERS
from hvdkit.layout import ParallelLayout
from hvdkit.parallel.traffic import ps_bytes_at_root, ring_bytes_per_rank
from hvdkit.recipe import load_recipe
from hvdkit.runtime.world import cores

GROUP = ("framework", "controller", "sync", "compression")


@dataclass
class SweepSpec:
    recipe: str
    nps: list[int] = field(default_factory=lambda: [1, 2])
    frameworks: list[str] = field(default_factory=lambda: ["torch"])
    controllers: list[str] = field(default_factory=lambda: ["mpi"])
    syncs: list[str] = field(default_factory=lambda: ["allreduce"])
    compressions: list[str] = field(default_factory=lambda: ["none"])
    mode: str = "strong"
    repeats: int = 1
    steps: int = 0
    """Optimizer steps per trial (0: the recipe's own length)."""
    to_accuracy: bool = False
    """Train the recipe to its end and record test accuracy and time to it."""
    threads: int | None = None
    timeline: bool = False
    predict: bool = False
    """Overlay the performance model (hvdkit.bench.compare), calibrated on the np=1 points."""
    overrides: list[str] = field(default_factory=list)
    out: str = "scaling"

    def validate(self) -> None:
        base = load_recipe(self.recipe, self.overrides)
        if self.mode not in ("strong", "weak"):
            raise UserError(f"--mode must be strong or weak, got {self.mode!r}")
        if self.repeats < 1:
            raise UserError("--repeats must be at least 1")
        if not self.nps or min(self.nps) < 1:
            raise UserError("--np needs rank counts of at least 1, e.g. 1,2")
        choices = {"--framework": (self.frameworks, FRAMEWORKS),
                   "--controller": (self.controllers, CONTROLLERS),
                   "--sync": (self.syncs, ("allreduce", "ps", "zero1", "none")),
                   "--compression": (self.compressions, ("none", "fp16", "powersgd"))}
        for flag, (given, valid) in choices.items():
            bad = [g for g in given if g not in valid]
            if bad or not given:
                raise UserError(f"{flag} {bad[0] if bad else ''!r}: valid: {', '.join(valid)}")
        if self.predict and 1 not in self.nps and "none" not in self.syncs:
            raise UserError("--predict calibrates compute at np=1 or on --sync none: add 1 "
                            "to --np")
        # Every point's layout is checked by the layout's own rules, before any trial runs.
        for controller, sync, compression, np_ in itertools.product(
                self.controllers, self.syncs, self.compressions, self.nps):
            point = load_recipe(self.recipe, [*self.overrides, f"parallel.sync={sync}",
                                              f"parallel.compression={compression}"])
            ParallelLayout.from_recipe(point, np_, controller,
                                       source=f"--sync {sync} --compression {compression} "
                                              f"--controller {controller} at -np {np_}")
        if self.mode == "strong":
            bad = [n for n in self.nps if base.train.batch_size % n]
            if bad:
                raise UserError(f"strong scaling splits train.batch_size={base.train.batch_size} "
                                f"over the ranks; it does not divide by {bad[0]}")

    def threads_per_rank(self) -> int:
        """The same at every point: --threads, else cores ÷ the largest rank count."""
        return self.threads or max(1, cores() // max(self.nps))

    def trials(self) -> list[dict[str, Any]]:
        combos = itertools.product(self.frameworks, self.controllers, self.syncs,
                                   self.compressions, sorted(self.nps))
        return [dict(zip((*GROUP, "np"), c, strict=True)) for c in combos]


def trial_overrides(spec: SweepSpec, trial: dict[str, Any]) -> list[str]:
    base = load_recipe(spec.recipe, spec.overrides)
    batch = base.train.batch_size // trial["np"] if spec.mode == "strong" \
        else base.train.batch_size
    sets = [*spec.overrides, f"train.batch_size={batch}", f"parallel.sync={trial['sync']}",
            f"parallel.compression={trial['compression']}"]
    if spec.steps and not spec.to_accuracy:
        sets.append(f"train.max_steps={spec.steps}")
    return sets


def trial_command(spec: SweepSpec, trial: dict[str, Any], run_dir: Path) -> list[str]:
    """The `hvdkit train` command of one trial (same threads per rank at every point)."""
    command = [sys.executable, "-m", "hvdkit", "train", spec.recipe, "-f", trial["framework"],
               "-np", str(trial["np"]), "--controller", trial["controller"],
               "--run-dir", str(run_dir), "--overwrite", "--no-progress",  # a rerun replaces it
               "--threads", str(spec.threads_per_rank())]
    for item in trial_overrides(spec, trial):
        command += ["--set", item]
    return command


def run_trial(spec: SweepSpec, trial: dict[str, Any], repeat: int) -> dict[str, Any]:
    """One `hvdkit train` job; returns its row (throughput, accuracy, breakdown)."""
    name = "-".join(str(trial[k]) for k in (*GROUP, "np")) + f"-r{repeat}"
    run_dir = Path(spec.out) / "runs" / name
    command = trial_command(spec, trial, run_dir)
    env = {}
    timeline = run_dir / "timeline.json"
    if spec.timeline:
        run_dir.mkdir(parents=True, exist_ok=True)
        env["HOROVOD_TIMELINE"] = str(timeline.resolve())
    run_logged(command, Path(spec.out) / "logs" / f"{name}.log", env)
    summary = json.loads((run_dir / "summary.json").read_text())
    return trial_row(trial, repeat, summary, timeline if spec.timeline else None)


def trial_row(trial: dict[str, Any], repeat: int, summary: dict[str, Any],
              timeline: Path | None) -> dict[str, Any]:
    timed = summary.get("timed") or {}
    n = trial["np"]
    grad_bytes = summary["parameters"] * (2 if trial["compression"] == "fp16" else 4)
    sent = (summary.get("exchange") or {}).get("bytes_sent_per_step")
    if sent is not None and n > 1:  # counted by the exchange itself (zero1, powersgd)
        moved = sent
    elif trial["sync"] == "ps":
        moved = ps_bytes_at_root(grad_bytes, 4 * summary["parameters"], n)
    else:
        moved = ring_bytes_per_rank(grad_bytes, n)
    row = {**trial, "repeat": repeat, "global_batch": summary["global_batch"],
           "samples_per_sec": timed.get("samples_per_sec", summary["samples_per_sec"]),
           "timed_samples": timed.get("samples"), "timed_seconds": timed.get("seconds"),
           "parameters": summary["parameters"], "bytes_per_step": moved,
           "parameter_tensors": summary.get("parameter_tensors"),
           "step_jitter": _jitter(timed),
           "test_accuracy": summary.get("test_accuracy"), "wall_time": summary["wall_time"],
           "threads_per_rank": summary.get("threads_per_rank"),
           "device": summary.get("device")}
    if "comm_seconds" in timed and timed.get("seconds") and n > 1:  # np=1 exchanges nothing
        row["comm_share"] = timed["comm_seconds"] / timed["seconds"]
    row.update(breakdown(timed))
    if timeline is not None and timeline.is_file():
        row.update(allreduce_share(timeline))
    return row


def _jitter(timed: dict[str, Any]) -> float | None:
    """A rank's step-to-step spread ÷ its mean step (`timed.step_sd`: a robust standard
    deviation)."""
    if not timed.get("steps") or not timed.get("step_seconds") or "step_sd" not in timed:
        return None
    return timed["step_sd"] / (timed["step_seconds"] / timed["steps"])


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median and spread (min, max) over the repeats, then speedup (with the spread's range)
    and efficiency per group."""
    keyed: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        keyed.setdefault(tuple(row[k] for k in (*GROUP, "np")), []).append(row)
    out = []
    for group in keyed.values():
        rates = [r["samples_per_sec"] for r in group]
        first = group[0]
        agg = {k: first[k] for k in (*GROUP, "np", "global_batch", "parameters",
                                      "bytes_per_step", "threads_per_rank")}
        agg.update(samples_per_sec=statistics.median(rates), spread_min=min(rates),
                   spread_max=max(rates), repeats=len(group))
        for name in ("comm_share", "timeline_allreduce_share", "test_accuracy", "wall_time",
                     "compute_share", "exposed_comm_share", "rest_share", "step_jitter"):
            values = [r[name] for r in group if r.get(name) is not None]
            agg[name] = statistics.median(values) if values else None
        out.append(agg)
    for key in {tuple(r[k] for k in GROUP) for r in out}:
        members = sorted((r for r in out if tuple(r[k] for k in GROUP) == key),
                         key=lambda r: r["np"])
        base = members[0]  # the configuration itself at its smallest rank count
        for r in members:
            r["speedup"] = r["samples_per_sec"] / base["samples_per_sec"]
            # The repeats' spread carried over, widest case: this point's extreme against
            # the other extreme of the base (min/max, not a fitted interval: few repeats).
            r["speedup_min"] = r["spread_min"] / base["spread_max"]
            r["speedup_max"] = r["spread_max"] / base["spread_min"]
            r["efficiency"] = r["speedup"] / (r["np"] / base["np"])
            # ps or fp16 beside plain ring-allreduce at the same rank count, where swept
            plain = [p for p in out if (p["framework"], p["controller"], p["sync"],
                                        p["compression"], p["np"]) ==
                     (r["framework"], r["controller"], "allreduce", "none", r["np"])]
            r["vs_allreduce"] = r["samples_per_sec"] / plain[0]["samples_per_sec"] \
                if plain else None
    return sorted(out, key=lambda r: (*(str(r[k]) for k in GROUP), r["np"]))


def sweep(spec: SweepSpec) -> dict[str, Any]:
    """Run every trial `repeats` times with a progress line each; write and return the report."""
    from hvdkit.bench.report import write_scale_report

    spec.validate()
    trials = spec.trials()
    how = "--threads" if spec.threads else f"{cores()} cores ÷ the largest -np {max(spec.nps)}"
    print(f"[scale] {spec.threads_per_rank()} thread(s) per rank at every point ({how})",
          flush=True)
    total = len(trials) * spec.repeats
    rows, done = [], 0
    for repeat in range(spec.repeats):  # repeats outermost: slow drifts hit every config alike
        for trial in trials:
            done += 1
            label = " ".join(f"{k}={trial[k]}" for k in (*GROUP, "np"))
            print(f"[scale {done}/{total}] {label} repeat {repeat + 1} ...", end=" ", flush=True)
            try:
                row = run_trial(spec, trial, repeat)
            except UserError as exc:  # keep the sweep going; the report lists what ran
                print(f"FAILED: {str(exc).splitlines()[0]}", flush=True)
                continue
            print(f"{row['samples_per_sec']:.0f} samples/s", flush=True)
            rows.append(row)
    if not rows:
        raise UserError(f"every trial failed; see {spec.out}/logs")
    result = {"spec": asdict(spec), "trials": rows, "results": aggregate(rows)}
    if spec.predict:
        from hvdkit.bench.calibrate import calibrate_link

        print("[scale] --predict: calibrating the link (2-rank allreduce)", flush=True)
        link = calibrate_link(Path(spec.out) / "logs")
        overlay(result["results"], link)
        result["prediction"] = {"link": asdict(link)}
    write_scale_report(result, Path(spec.out))
    return result
