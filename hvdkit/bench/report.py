"""Reports of the studies: results.csv, results.json, PNG plots (matplotlib, Agg) and report.md
naming the machine. `write_scale_report` for `hvdkit scale`, `write_allreduce_report` for
`hvdkit bench allreduce`."""

from __future__ import annotations

import csv
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from hvdkit.bench.bandwidth import human_bytes
from hvdkit.runtime.world import cores

SCALE_COLUMNS = ("framework", "controller", "sync", "compression", "np", "global_batch",
                 "threads_per_rank", "samples_per_sec", "spread_min", "spread_max", "repeats",
                 "speedup", "speedup_min", "speedup_max", "efficiency", "vs_allreduce",
                 "comm_share", "timeline_allreduce_share", "compute_share",
                 "exposed_comm_share", "rest_share", "predicted_samples_per_sec",
                 "prediction_error",
                 "parameters", "bytes_per_step", "test_accuracy", "wall_time")


def machine() -> dict[str, Any]:
    """Host, cores and versions (Python, frameworks, Horovod, MPI) for the report's header;
    versions from package metadata, so that no framework is imported here."""
    from hvdkit.launch.info import mpi_version

    versions = {"python": platform.python_version()}
    for name in ("numpy", "torch", "tensorflow", "keras", "horovod", "mpi4py"):
        versions[name] = "not installed"
        for dist in (name, f"{name}-cpu"):
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cores": cores(), **versions, "mpi": mpi_version()}


def write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write as a 100-dpi PNG, and free the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def _label(row: dict[str, Any]) -> str:
    parts = [row["framework"], row["controller"]]
    if row["sync"] != "allreduce":
        parts.append("parameter server")
    if row["compression"] != "none":
        parts.append(row["compression"])
    return " ".join(parts)


def _lines(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    lines: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        lines.setdefault(_label(row), []).append(row)
    return lines


def _title(what: str, rows: list[dict[str, Any]], mode: str, recipe: str) -> str:
    """A title that says what was measured: the recipe, the mode, threads per rank, repeats."""
    threads = "/".join(sorted({str(r.get("threads_per_rank")) for r in rows}))
    repeats = max(int(r.get("repeats") or 1) for r in rows)
    spread = f", bars: min–max of {repeats} repeats" if repeats > 1 else ""
    name = f"{Path(recipe).stem}, " if recipe else ""
    return f"{what}: {name}{mode} scaling\n{threads} thread(s) per rank{spread}"


def _errors(line: list[dict[str, Any]], key: str, low: str, high: str,
            scale: list[float] | None = None) -> list[list[float]]:
    """matplotlib's yerr (below, above) from the rows' `low`/`high` columns (0 where absent)."""
    scale = scale or [1.0] * len(line)
    below = [max(0.0, r[key] - r[low] / s) if r.get(low) is not None else 0.0
             for r, s in zip(line, scale, strict=True)]
    above = [max(0.0, r[high] / s - r[key]) if r.get(high) is not None else 0.0
             for r, s in zip(line, scale, strict=True)]
    return [below, above]


def plot_scaling(rows: list[dict[str, Any]], out: Path, mode: str,
                 recipe: str = "") -> list[Path]:
    """throughput.png, speedup.png and efficiency.png against workers: one line per
    configuration with the repeats' min–max as error bars, and the ideal (linear from each
    configuration's smallest np) dashed in the same colour; legends beside the axes."""
    plt = _pyplot()
    written = []
    nps = sorted({r["np"] for r in rows})
    plots = (("samples_per_sec", "samples/s (all ranks)", "throughput", "Throughput"),
             ("speedup", "speed-up over the smallest np", "speedup", "Speed-up"),
             ("efficiency", f"{mode}-scaling efficiency", "efficiency", "Efficiency"))
    for key, ylabel, name, what in plots:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        top = 0.0
        ideals: list[tuple[list[int], list[float], str, str]] = []
        for label, line in _lines(rows).items():
            line = sorted(line, key=lambda r: r["np"])
            xs = [r["np"] for r in line]
            base = line[0]
            ideal_factor = [x / base["np"] for x in xs]
            if key == "samples_per_sec":
                errors = _errors(line, key, "spread_min", "spread_max")
                ideal = [base[key] * f for f in ideal_factor]
            elif key == "speedup":
                errors = _errors(line, key, "speedup_min", "speedup_max")
                ideal = ideal_factor
            else:  # efficiency: the speed-up's range over the ideal speed-up
                errors = _errors(line, key, "speedup_min", "speedup_max", ideal_factor)
                ideal = [1.0] * len(xs)
            shown = ax.errorbar(xs, [r[key] for r in line], yerr=errors, marker="o",
                                capsize=4, label=label)
            if key == "samples_per_sec" and line[0].get("predicted_samples_per_sec"):
                predicted = [r["predicted_samples_per_sec"] for r in line]
                ax.plot(xs, predicted, linestyle=":", marker="x", color=shown[0].get_color(),
                        label=f"{label} (predicted)")
                top = max(top, *predicted)
            if key == "samples_per_sec":  # each configuration's own ideal, in its colour
                ideals.append((xs, ideal, shown[0].get_color(), f"{label}: ideal"))
            else:  # one ideal for the configurations that share a smallest np
                ideals.append((xs, ideal, "grey", "ideal (linear)"))
            top = max(top, *ideal, *(r[key] + e for r, e in zip(line, errors[1], strict=True)))
        drawn: set[tuple] = set()
        for xs, ideal, colour, label in ideals:
            if (tuple(xs), tuple(ideal), colour) not in drawn:
                drawn.add((tuple(xs), tuple(ideal), colour))
                ax.plot(xs, ideal, linestyle="--", linewidth=1, color=colour,
                        label=label if colour != "grey" or len(drawn) == 1 else None)
        ax.set_ylim(0, top * 1.08)
        ax.set_xlabel("workers (ranks)")
        ax.set_xticks(nps)
        ax.set_ylabel(ylabel)
        ax.set_title(_title(what, rows, mode, recipe), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        written.append(_save(fig, out / f"{name}.png"))
    shares = [r for r in rows if r.get("compute_share") is not None
              or r.get("comm_share") is not None]
    if shares:
        written.append(plot_breakdown(shares, out))
    return written


def plot_breakdown(rows: list[dict[str, Any]], out: Path) -> Path:
    """breakdown.png: each configuration's timed window split into compute, exposed
    communication (Horovod's timeline share where recorded, else hvdkit's exchange timer; none
    apart where TensorFlow compiled it into the step) and the rest (hvdkit.bench.compare)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * len(rows)))
    labels = [f"{_label(r)} np={r['np']}" for r in rows]
    rest = [r.get("rest_share") or 0.0 for r in rows]
    comm = [min(1.0, r["timeline_allreduce_share"] if r.get("timeline_allreduce_share")
                is not None else r.get("exposed_comm_share") or r.get("comm_share") or 0.0)
            for r in rows]
    compute = [max(0.0, 1 - c - x) for c, x in zip(comm, rest, strict=True)]
    ax.barh(labels, compute, label="compute")
    ax.barh(labels, comm, left=compute, label="exposed communication")
    ax.barh(labels, rest, left=[a + b for a, b in zip(compute, comm, strict=True)],
            label="the rest (outside the steps)")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the timed window")
    ax.set_title("Where the time goes")
    ax.legend(fontsize=8, loc="lower right")
    ax.tick_params(axis="y", labelsize=8)
    return _save(fig, out / "breakdown.png")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def machine_lines(info: dict[str, Any]) -> list[str]:
    return [f"- **{k}**: {v}" for k, v in info.items()]


def write_scale_report(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result["machine"] = machine()
    rows, spec = result["results"], result["spec"]
    write_csv(out / "results.csv", rows, SCALE_COLUMNS)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    plots = plot_scaling(rows, out, spec["mode"], spec["recipe"])
    threads = sorted({str(r["threads_per_rank"]) for r in rows})
    shown = ("framework", "controller", "sync", "compression", "np", "samples_per_sec",
             "speedup", "efficiency", "vs_allreduce", "comm_share",
             "timeline_allreduce_share", "compute_share", "exposed_comm_share", "rest_share",
             "predicted_samples_per_sec", "prediction_error", "bytes_per_step",
             "test_accuracy", "wall_time")
    text = [f"# Scaling study: {spec['recipe']} ({spec['mode']} scaling)", "",
            *machine_lines(result["machine"]), f"- **threads per rank**: {', '.join(threads)}",
            f"- **repeats**: {spec['repeats']} (median shown; spread in results.csv)", "",
            "Throughput: samples all ranks processed ÷ seconds between barriers, warm-up out. "
            "Speedup and efficiency: each configuration against itself at its smallest np; "
            "vs_allreduce: against plain ring-allreduce at the same np. "
            "wall_time: the whole job, start-up included. "
            "comm_share: hvdkit's own timer of the gradient exchange wait; "
            "timeline_allreduce_share: Horovod's timeline (with --timeline). "
            "bytes_per_step: gradient bytes each rank sends (the root's, for the parameter "
            "server). compute/exposed_comm/rest_share: the timed window split by hvdkit's "
            "timers (hvdkit.bench.compare). predicted_samples_per_sec (with --predict): the "
            "performance model calibrated on the np=1 point (hvdkit.bench.perfmodel); "
            "prediction_error: predicted ÷ measured − 1.", "", markdown_table(rows, shown), "",
            *[f"![{p.stem}]({p.name})" for p in plots], ""]
    if spec.get("to_accuracy"):
        text.insert(-2, "wall_time is the time to the final test accuracy beside it.")
    (out / "report.md").write_text("\n".join(text))


ALLREDUCE_COLUMNS = ("impl", "controller", "np", "bytes", "p50_us", "p90_us", "algbw_GBps",
                     "busbw_GBps")


def plot_allreduce(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    plt = _pyplot()
    written = []
    for key, ylabel, name, log in (("busbw_GBps", "bus bandwidth (GB/s)", "busbw", False),
                                   ("p50_us", "latency p50 (µs)", "latency", True)):
        fig, ax = plt.subplots(figsize=(6, 4))
        lines: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            lines.setdefault(f"{r['impl']} ({r['controller']})", []).append(r)
        for label, line in lines.items():
            ax.plot([r["bytes"] for r in line], [r[key] for r in line], marker="o", label=label)
        ax.set_xscale("log", base=2)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"Allreduce {name}, np={rows[0]['np']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, out / f"allreduce_{name}.png"))
    return written


def write_allreduce_report(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result["machine"] = machine()
    rows = result["sizes"]
    write_csv(out / "allreduce.csv", rows, ALLREDUCE_COLUMNS)
    (out / "allreduce.json").write_text(json.dumps(result, indent=2) + "\n")
    plots = plot_allreduce(rows, out)
    summary = [f"- **{k}**: {_fmt(v)}" for k, v in result["summary"].items()]
    text = ["# Allreduce microbenchmark", "", *machine_lines(result["machine"]), "",
            "busbw = algbw × 2(n−1)/n (nccl-tests); Horovod's in-place allreduce against raw "
            "mpi4py in-place Allreduce in the same job.", "", *summary, "",
            markdown_table([{**r, "bytes": human_bytes(r["bytes"])} for r in rows],
                           ALLREDUCE_COLUMNS), ""]
    if result["cycle_times"]:
        text += ["Horovod's cycle time (HOROVOD_CYCLE_TIME): a 4 B allreduce's latency and "
                 "the 200 small tensors' fused time.", "",
                 markdown_table(result["cycle_times"],
                                ("cycle_time_ms", "p50_4B_us", "fused_200_ms")), ""]
    text += [*[f"![{p.stem}]({p.name})" for p in plots], ""]
    (out / "report.md").write_text("\n".join(text))
