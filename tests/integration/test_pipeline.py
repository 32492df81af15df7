"""Pipeline and placement against single-process training, both frameworks, real MPI jobs.

Per framework: one process computes the references (plain training at batch 16 and 32, and a
model placed over two devices), one 2-rank job runs GPipe, 1F1B, interleaved (v=2) and ZB-H1
with m=4 through the trainer, and a placement over two devices on each of the 2 ranks (data
parallel); one 4-rank job per framework runs 2 stages x 2 replicas (PyTorch: the ring without
and with fp16 compression, ZB-H1, ZeRO-1; both: the parameter server, PowerSGD, and a GPT with
tied weights on both stages under PowerSGD). Parameters must agree to 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hvdkit.launch.options import LaunchOptions
from hvdkit.parallel.schedules import simulate
from tests.integration.jobs import load_arrays, max_abs_diff, run_job, worker

pytestmark = pytest.mark.integration
FRAMEWORKS = ["torch", "tensorflow"]
TOLERANCE = 1e-5
_cache: dict[tuple[str, str], Path] = {}


def _run(tmp_path_factory, framework: str, mode: str) -> Path:
    """mode: reference (1 process), pipeline (2 ranks) or hybrid (4 ranks)."""
    key = (framework, mode)
    if key not in _cache:
        out = tmp_path_factory.mktemp(f"pipe-{framework}-{mode}")
        argv = worker("pipeline", "--framework", framework, "--out", str(out),
                      *([f"--{mode}"] if mode != "pipeline" else []))
        np_ = {"reference": 1, "pipeline": 2, "hybrid": 4}[mode]
        # 4 ranks on a 2-core host: OpenMPI must be told that oversubscribing is intended.
        extra = ["--oversubscribe"] if np_ > 2 else []
        run_job(argv, options=LaunchOptions(np=np_, mpi_args=extra))
        _cache[key] = out
    return _cache[key]


@pytest.fixture(params=FRAMEWORKS)
def framework(request) -> str:
    return request.param


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved", "zb-h1"])
def test_two_stages_match_single_process(tmp_path_factory, framework: str,
                                         schedule: str) -> None:
    reference = _run(tmp_path_factory, framework, "reference")
    pipeline = _run(tmp_path_factory, framework, "pipeline")
    assert max_abs_diff(load_arrays(pipeline / f"{schedule}.npz"),
                        load_arrays(reference / "single16.npz")) <= TOLERANCE


def test_stopped_pipeline_resumes_from_its_checkpoint_to_the_same_end(
        tmp_path_factory, framework: str) -> None:
    pipeline = _run(tmp_path_factory, framework, "pipeline")
    # The stopped run checkpointed after step 3 (1-based) and stopped after step 4: the
    # resumed one repeats step 4 (index 3) and goes on to the end.
    assert json.loads((pipeline / "resumed.json").read_text())["steps"] == [3, 4, 5]
    assert max_abs_diff(load_arrays(pipeline / "resumed.npz"),
                        load_arrays(pipeline / "interleaved.npz")) <= 1e-6


def test_placement_over_two_devices_matches_unsplit(tmp_path_factory, framework: str) -> None:
    reference = _run(tmp_path_factory, framework, "reference")
    diff = max_abs_diff(load_arrays(reference / "placed.npz"),
                        load_arrays(reference / "single16.npz"))
    assert diff <= TOLERANCE


def test_placement_with_two_ranks_trains_data_parallel(tmp_path_factory, framework: str) -> None:
    """Each rank places the model over two devices; the ranks still average their gradients."""
    reference = _run(tmp_path_factory, framework, "reference")
    pipeline = _run(tmp_path_factory, framework, "pipeline")
    expected = load_arrays(reference / "single32.npz")
    assert max_abs_diff(load_arrays(pipeline / "placed_rank0.npz"), expected) <= TOLERANCE
    assert max_abs_diff(load_arrays(pipeline / "placed_rank1.npz"), expected) <= TOLERANCE


def test_1f1b_holds_at_most_stages_microbatches_gpipe_holds_m(tmp_path_factory,
                                                             framework: str) -> None:
    pipeline = _run(tmp_path_factory, framework, "pipeline")
    gpipe = json.loads((pipeline / "gpipe.json").read_text())
    one_f_one_b = json.loads((pipeline / "1f1b.json").read_text())
    assert gpipe["stage_peak_microbatches"] == [4, 4]  # m = 4, counted while running
    assert one_f_one_b["stage_peak_microbatches"][0] <= 2  # stages = 2
    assert one_f_one_b["stage_peak_microbatches"][0] == 2  # and it does fill the pipeline
    for report in (gpipe, one_f_one_b):
        assert 0.0 <= report["bubble"] < 1.0 and len(report["stage_busy_s"]) == 2
        busiest = report["stage_busy_s"].index(max(report["stage_busy_s"]))
        assert report["bubble"] == report["stage_idle"][busiest]  # the schedule's idle share
        assert 0.0 <= report["imbalance"] < 1.0
        assert all(m > 0 for m in report["stage_max_rss_mib"])
    assert (one_f_one_b["stage_peak_activation_mib"][0]
            < gpipe["stage_peak_activation_mib"][0])


@pytest.mark.parametrize("name", ["hybrid", "hybrid_zb"])  # 1F1B, ZB-H1
def test_hybrid_two_stages_two_replicas_match_double_batch(tmp_path_factory, name: str) -> None:
    reference = _run(tmp_path_factory, "torch", "reference")
    hybrid = _run(tmp_path_factory, "torch", "hybrid")
    expected = load_arrays(reference / "single32.npz")
    assert max_abs_diff(load_arrays(hybrid / f"{name}.npz"), expected) <= TOLERANCE
    assert max_abs_diff(load_arrays(hybrid / f"{name}_replica1.npz"), expected) <= TOLERANCE
    assert json.loads((hybrid / f"{name}.json").read_text())["replicas"] == 2


def test_zb_h1_and_interleaved_hold_what_the_simulator_predicts(tmp_path_factory,
                                                                framework: str) -> None:
    """Counted while running: ZB-H1 holds no more micro-batches than 1F1B at its peak (its
    last stage holds more than 1F1B's until the deferred W's run); interleaved (v = 2) holds
    (v − 1)·p + 2(p − s − 1) + 1 micro-batch chunks on stage s (Megatron-LM's warm-ups)."""
    pipeline = _run(tmp_path_factory, framework, "pipeline")
    report = {name: json.loads((pipeline / f"{name}.json").read_text())
              for name in ("1f1b", "interleaved", "zb-h1")}
    predicted = {name: simulate(name, 2, 4, report[name]["virtual_stages"]).peak
                 for name in report}
    for name in report:
        assert report[name]["stage_peak_microbatches"] == predicted[name], name
    assert max(report["zb-h1"]["stage_peak_microbatches"]) <= max(
        report["1f1b"]["stage_peak_microbatches"])
    assert report["interleaved"]["stage_peak_microbatches"] == [5, 3]
    assert report["zb-h1"]["ideal_bubble"] == pytest.approx(1 / 13)
    assert report["interleaved"]["ideal_bubble"] == pytest.approx(1 / 9)


def test_fp16_compression_applies_in_a_hybrid_pipeline(tmp_path_factory) -> None:
    hybrid = _run(tmp_path_factory, "torch", "hybrid")
    plain = json.loads((hybrid / "hybrid.json").read_text())["exchange"]
    fp16 = json.loads((hybrid / "hybrid_fp16.json").read_text())["exchange"]
    assert (plain["compression"], fp16["compression"]) == ("none", "fp16")
    assert plain["replicas"] == fp16["replicas"] == 2
    assert fp16["bytes_per_step"] == pytest.approx(plain["bytes_per_step"] / 2)
    diff = max_abs_diff(load_arrays(hybrid / "hybrid_fp16.npz"),
                        load_arrays(hybrid / "hybrid.npz"))
    assert 0 < diff <= 1e-4  # compressed on the wire (not bit-equal), yet the same training
    assert max_abs_diff(load_arrays(hybrid / "hybrid_fp16.npz"),
                        load_arrays(hybrid / "hybrid_fp16_replica1.npz")) == 0.0


def test_zero1_shards_each_stages_optimizer_state_in_a_hybrid_pipeline(tmp_path_factory) -> None:
    """ZeRO-1 over each stage's 2 replicas: the same training, half the optimizer state."""
    hybrid = _run(tmp_path_factory, "torch", "hybrid")
    plain = json.loads((hybrid / "hybrid.json").read_text())["exchange"]
    zero = json.loads((hybrid / "hybrid_zero1.json").read_text())["exchange"]
    assert zero["sync"] == "zero1"
    assert zero["optimizer_state_bytes"] <= 0.55 * plain["optimizer_state_bytes"]
    assert max_abs_diff(load_arrays(hybrid / "hybrid_zero1.npz"),
                        load_arrays(hybrid / "hybrid.npz")) <= TOLERANCE
    assert max_abs_diff(load_arrays(hybrid / "hybrid_zero1.npz"),
                        load_arrays(hybrid / "hybrid_zero1_replica1.npz")) == 0.0


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_parameter_server_in_a_hybrid_pipeline_equals_the_ring(tmp_path_factory,
                                                               framework: str) -> None:
    """2 stages x 2 replicas, each stage's replicas served by its first: the ring's training."""
    hybrid = _run(tmp_path_factory, framework, "hybrid")
    ring = load_arrays(hybrid / "hybrid.npz")
    assert json.loads((hybrid / "hybrid_ps.json").read_text())["exchange"]["sync"] == "ps"
    assert max_abs_diff(load_arrays(hybrid / "hybrid_ps.npz"), ring) <= TOLERANCE
    assert max_abs_diff(load_arrays(hybrid / "hybrid_ps_replica1.npz"),
                        load_arrays(hybrid / "hybrid_ps.npz")) == 0.0


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_powersgd_in_a_hybrid_pipeline_trains_as_the_ring_within_its_compression(
        tmp_path_factory, framework: str) -> None:
    """Rank-2 PowerSGD from step 2 of 6 moves the MLP less than 0.05 from the ring's
    parameters (each stage compresses its own weights), and the replicas stay bit-equal."""
    hybrid = _run(tmp_path_factory, framework, "hybrid")
    powersgd = load_arrays(hybrid / "hybrid_powersgd.npz")
    report = json.loads((hybrid / "hybrid_powersgd.json").read_text())["exchange"]
    assert report["compression"] == "powersgd" and report["compressed_tensors"] >= 1
    assert 0 < max_abs_diff(powersgd, load_arrays(hybrid / "hybrid.npz")) <= 0.05
    assert max_abs_diff(powersgd, load_arrays(hybrid / "hybrid_powersgd_replica1.npz")) == 0.0


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_tied_gpt_weights_stay_equal_under_powersgd(tmp_path_factory, framework: str) -> None:
    """The GPT's token embedding (stage 0) and its tied head's copy (stage 1) get the same
    gradient: tied weights are allreduced whole, never compressed by each stage apart."""
    hybrid = _run(tmp_path_factory, framework, "hybrid")
    first, last = (load_arrays(hybrid / "gpt_powersgd_rank0.npz"),
                   load_arrays(hybrid / "gpt_powersgd_rank1.npz"))
    tied = last[-3]  # the last stage's copy of the token embedding, before the final norm
    assert tied.shape == first[0].shape == (256, 16)
    assert max_abs_diff([tied], [first[0]]) <= 1e-6
    assert json.loads((hybrid / "gpt_powersgd.json").read_text())["compressed_tensors"] >= 1
    for stage in (0, 1):  # the replicas of each stage agree
        assert max_abs_diff(load_arrays(hybrid / f"gpt_powersgd_rank{stage}.npz"),
                            load_arrays(hybrid / f"gpt_powersgd_rank{stage + 2}.npz")) == 0.0
