"""The study arithmetic without a Horovod job: bandwidth, throughput window, aggregation,
timeline parsing, and the report files (CSV, JSON, PNGs that decode)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from hvdkit.bench.bandwidth import algbw, busbw, percentiles
from hvdkit.bench.scale import aggregate
from hvdkit.bench.timeline import allreduce_share, union_length
from hvdkit.parallel.traffic import bus_factor, ps_bytes_at_root, ring_bytes_per_rank
from hvdkit.training.timing import ThroughputWindow, robust_sd


def test_bus_bandwidth_matches_nccl_tests_definitions():
    # 64 MiB in 10 ms: algbw 6.71 GB/s; on 2 ranks busbw = algbw, on 4 ranks 1.5 x algbw.
    nbytes, seconds = 64 * 2**20, 0.010
    assert algbw(nbytes, seconds) == pytest.approx(6.7108864e9)
    assert busbw(nbytes, seconds, 2) == pytest.approx(6.7108864e9)
    assert busbw(nbytes, seconds, 4) == pytest.approx(1.5 * 6.7108864e9)
    assert busbw(nbytes, seconds, 8) == pytest.approx(1.75 * 6.7108864e9)
    assert bus_factor(1) == 0.0


def test_bytes_moved_ring_against_parameter_server():
    grads = 4 * 1_000_000  # 1 M float32 parameters
    assert ring_bytes_per_rank(grads, 2) == grads
    assert ring_bytes_per_rank(grads, 4) == 1.5 * grads
    assert ps_bytes_at_root(grads, grads, 4) == 6 * grads  # 3 gradients in, 3 copies out
    assert ps_bytes_at_root(grads // 2, grads, 2) == 1.5 * grads  # fp16 gradients in
    assert ring_bytes_per_rank(grads // 2, 4) == 0.75 * grads  # fp16 halves the wire bytes


def test_percentiles():
    p = percentiles([float(i) for i in range(1, 101)])
    assert p["p50"] == pytest.approx(50.5) and p["p90"] == pytest.approx(90.1)


def test_throughput_window_counts_samples_after_warmup():
    ranks = 3  # a fake allreduce: every rank did what this one did
    window = ThroughputWindow(lambda v, **_: np.asarray(v) * ranks, warmup_steps=2,
                              total_steps=10)
    for step in range(10):
        window.before_step(step)
        window.after_step(16, 0.001 if step % 2 else 0.003)
    result = window.close()
    assert result["samples"] == 16 * 8 * ranks and result["steps"] == 8
    assert result["samples_per_sec"] == pytest.approx(result["samples"] / result["seconds"])
    # the timed steps took 1 and 3 ms in turn: quartiles 1 and 3 ms
    assert result["step_seconds"] == pytest.approx(0.016)
    assert result["step_sd"] == pytest.approx(0.002 / 1.349)


def test_robust_spread_ignores_a_rare_pause():
    steps = list(np.linspace(0.009, 0.011, 100))
    assert robust_sd([*steps, 1.0]) == pytest.approx(robust_sd(steps), rel=0.05)
    assert robust_sd([0.01, 0.02]) == 0.0  # too few steps to tell


def test_aggregate_speedup_and_efficiency():
    rows = []
    for n, rates in ((1, [100.0, 110.0, 90.0]), (2, [180.0, 170.0, 190.0])):
        for i, rate in enumerate(rates):
            rows.append({"framework": "torch", "controller": "mpi", "sync": "allreduce",
                         "compression": "none", "np": n, "repeat": i, "global_batch": 32,
                         "parameters": 10, "bytes_per_step": 0.0, "threads_per_rank": 1,
                         "samples_per_sec": rate})
    ps = [{**r, "sync": "ps", "samples_per_sec": r["samples_per_sec"] / 2} for r in rows]
    one, two, ps_one, ps_two = aggregate(rows + ps)
    assert (one["samples_per_sec"], one["spread_min"], one["spread_max"]) == (100.0, 90.0, 110.0)
    assert two["speedup"] == pytest.approx(1.8) and two["efficiency"] == pytest.approx(0.9)
    # The repeats' spread reaches the speed-up: widest case, 170/110 to 190/90.
    assert (two["speedup_min"], two["speedup_max"]) == pytest.approx((170 / 110, 190 / 90))
    # Efficiency stays within one configuration; vs_allreduce compares at the same np.
    assert ps_one["efficiency"] == 1.0 and ps_two["speedup"] == pytest.approx(1.8)
    assert ps_two["vs_allreduce"] == pytest.approx(0.5) and two["vs_allreduce"] == 1.0


def test_timeline_allreduce_share(tmp_path):
    events = [{"name": "ALLREDUCE", "ph": "B", "ts": 0, "pid": 1},
              {"name": "ALLREDUCE", "ph": "E", "ts": 10, "pid": 1},
              {"name": "ALLREDUCE", "ph": "B", "ts": 5, "pid": 2},
              {"name": "ALLREDUCE", "ph": "E", "ts": 20, "pid": 2},
              {"name": "ALLREDUCE", "ph": "B", "ts": 80, "pid": 1},
              {"name": "ALLREDUCE", "ph": "E", "ts": 100, "pid": 1}]
    path = tmp_path / "timeline.json"
    path.write_text("[\n" + ",\n".join(json.dumps(e) for e in events) + ",\n")  # unclosed
    assert union_length([(0, 10), (5, 20), (80, 100)]) == 40
    assert allreduce_share(path)["timeline_allreduce_share"] == pytest.approx(0.4)


def test_report_files(tmp_path, monkeypatch):
    import matplotlib.image

    from hvdkit.bench import report

    monkeypatch.setattr(report, "machine", lambda: {"cores": 2, "python": "3"})
    rows = [{"framework": "torch", "controller": "mpi", "sync": s, "compression": "none",
             "np": n, "samples_per_sec": 100.0 * n, "spread_min": 90.0 * n,
             "spread_max": 110.0 * n, "efficiency": 1.0, "speedup": float(n), "repeats": 1,
             "threads_per_rank": 1, "comm_share": 0.1 * n}
            for s in ("allreduce", "ps") for n in (1, 2)]
    spec = {"recipe": "r.yaml", "mode": "strong", "repeats": 1}
    report.write_scale_report({"spec": spec, "trials": [], "results": rows}, tmp_path)
    with (tmp_path / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4
    assert json.loads((tmp_path / "results.json").read_text())["results"] == rows
    for name in ("throughput", "speedup", "efficiency", "breakdown"):
        assert matplotlib.image.imread(tmp_path / f"{name}.png").ndim == 3
    assert "cores" in (tmp_path / "report.md").read_text()


def test_scaling_plots_show_spread_ideal_and_what_was_measured(tmp_path, monkeypatch):
    from hvdkit.bench import report

    drawn = []
    real = report._save
    monkeypatch.setattr(report, "_save", lambda fig, path: drawn.append(fig.axes[0]) or
                        real(fig, path))
    rows = [{"framework": "torch", "controller": "mpi", "sync": "allreduce",
             "compression": "none", "np": n, "samples_per_sec": 100.0 * n * e,
             "spread_min": 90.0 * n * e, "spread_max": 110.0 * n * e, "speedup": n * e,
             "speedup_min": 0.8 * n * e, "speedup_max": 1.2 * n * e, "efficiency": e,
             "repeats": 3, "threads_per_rank": 2} for n, e in ((1, 1.0), (2, 0.9), (4, 0.7))]
    paths = report.plot_scaling(rows, tmp_path, "weak", "recipes/synthetic_cnn.yaml")
    assert [p.name for p in paths] == ["throughput.png", "speedup.png", "efficiency.png"]
    for ax, ideal in zip(drawn, ([100, 200, 400], [1, 2, 4], [1, 1, 1]), strict=True):
        title = ax.get_title()
        assert "synthetic_cnn, weak scaling" in title and "2 thread(s) per rank" in title
        assert "min–max of 3 repeats" in title
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert [list(line.get_ydata()) for line in dashed] == [ideal]
        bars = [c for c in ax.containers if c.has_yerr]
        assert len(bars) == 1  # one configuration, with error bars
        legend = ax.get_legend()
        assert legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1  # beside the axes


def test_scale_gives_every_point_the_same_threads(monkeypatch, tmp_path):
    from hvdkit.bench import scale

    monkeypatch.setattr(scale, "cores", lambda: 8)
    spec = scale.SweepSpec(recipe="recipes/synthetic_cnn.yaml", nps=[1, 2, 4])
    threads = {cmd[cmd.index("--threads") + 1] for cmd in
               (scale.trial_command(spec, trial, tmp_path) for trial in spec.trials())}
    assert threads == {"2"}  # 8 cores ÷ the largest -np 4, at np=1 too
    spec.threads = 3
    command = scale.trial_command(spec, spec.trials()[0], tmp_path)
    assert command[command.index("--threads") + 1] == "3"


def test_no_comm_share_at_one_rank():
    from hvdkit.bench.scale import trial_row

    summary = {"parameters": 10, "global_batch": 32, "samples_per_sec": 5.0, "wall_time": 9.0,
               "timed": {"samples_per_sec": 5.0, "seconds": 2.0, "comm_seconds": 0.2}}
    trial = {"framework": "torch", "controller": "mpi", "sync": "allreduce",
             "compression": "none"}
    assert "comm_share" not in trial_row({**trial, "np": 1}, 0, summary, None)
    assert trial_row({**trial, "np": 2}, 0, summary, None)["comm_share"] == 0.1
