"""train.precision, fp16 loss scaling, optimizer.clip_norm and train.compile in real Horovod
jobs (workers/precision.py): per framework one reference process (batch 32), one 2-rank job
per controller (MPI and Gloo; the MPI job adds the pipeline, resume, compile and digits_cnn
checks) and one 4-rank job of 2 stages x 2 replicas.

bf16 tolerance, derived: autocast rounds each weight gradient to bf16 (8 significant bits,
relative error <= 2^-8) before it reaches the fp32 parameter, and the two ranks round their
half-batch sums where one process rounds the whole batch's, so a step's gradients differ by
up to 2^-8 x |g|. Over STEPS SGD steps with momentum mu at rate lr, |g| <= 1 (cross-entropy
gradients of the digits' [0, 1] inputs), the parameters differ by at most
lr x STEPS x 1/(1 - mu) x 2^-8 = 0.1 x 6 x 2 x 2^-8 = 4.7e-3.
"""

from __future__ import annotations

import json

import pytest

from hvdkit.launch.options import LaunchOptions
from tests.integration.jobs import load_arrays, max_abs_diff, run_job, worker

pytestmark = pytest.mark.integration
FRAMEWORKS = ["torch", "tensorflow"]
TOLERANCE = 1e-5
LR, STEPS, MOMENTUM = 0.1, 6, 0.5
BF16_TOLERANCE = LR * STEPS / (1 - MOMENTUM) * 2.0 ** -8
_cache: dict[tuple[str, str], object] = {}


def _job(tmp_path_factory, framework: str, mode: str):
    """mode: reference (1 process), mpi / gloo (2 ranks), hybrid (4 ranks, MPI)."""
    key = (framework, mode)
    if key not in _cache:
        out = tmp_path_factory.mktemp(f"precision-{framework}-{mode}")
        argv = worker("precision", "--framework", framework, "--out", str(out))
        if mode == "reference":
            run_job([*argv, "--reference"], np=1)
        elif mode == "hybrid":
            run_job([*argv, "--hybrid"], options=LaunchOptions(np=4,
                                                                 mpi_args=["--oversubscribe"]),
                    timeout=900)
        else:
            run_job([*argv, *(["--full"] if mode == "mpi" else [])], np=2, controller=mode,
                    timeout=1200)
        _cache[key] = out
    return _cache[key]


def _results(tmp_path_factory, framework: str, controller: str) -> dict:
    return json.loads((_job(tmp_path_factory, framework, controller) /
                       "results.json").read_text())


@pytest.fixture(params=FRAMEWORKS)
def framework(request) -> str:
    return request.param


@pytest.fixture(params=["mpi", "gloo"])
def controller(request) -> str:
    return request.param


def test_bf16_two_ranks_equal_one_process_on_the_double_batch(tmp_path_factory, framework,
                                                              controller) -> None:
    ref = _job(tmp_path_factory, framework, "reference")
    out = _job(tmp_path_factory, framework, controller)
    bf16 = load_arrays(out / "bf16.npz")
    assert max_abs_diff(bf16, load_arrays(ref / "bf16.npz")) <= BF16_TOLERANCE
    # bf16 is really on: it moves the parameters away from fp32's by more than fp32 noise.
    assert max_abs_diff(bf16, load_arrays(out / "fp32.npz")) > 1e-4
    assert max_abs_diff(load_arrays(out / "fp32.npz"), load_arrays(ref / "fp32.npz")) <= TOLERANCE
    assert _results(tmp_path_factory, framework, controller)["bf16_replicas_bit_equal"]


@pytest.mark.parametrize("case", ["clip", "clip_zero1"])
def test_clip_norm_equals_one_process_on_the_double_batch(tmp_path_factory, framework,
                                                          controller, case: str) -> None:
    ref = _job(tmp_path_factory, framework, "reference")
    out = _job(tmp_path_factory, framework, controller)
    clipped = load_arrays(out / f"{case}.npz")
    assert max_abs_diff(clipped, load_arrays(ref / "clip.npz")) <= TOLERANCE
    assert max_abs_diff(clipped, load_arrays(ref / "fp32.npz")) > 1e-4  # the clip acted
    assert _results(tmp_path_factory, framework, controller)[f"{case}_replicas_bit_equal"]


def test_clip_norm_over_a_two_stage_pipeline(tmp_path_factory, framework) -> None:
    ref = _job(tmp_path_factory, framework, "reference")
    out = _job(tmp_path_factory, framework, "mpi")
    assert max_abs_diff(load_arrays(out / "clip_pipeline.npz"),
                        load_arrays(ref / "clip.npz")) <= TOLERANCE


def _check_overflow(run: dict, steps: int) -> None:
    histories = run["histories"]
    assert all(h == histories[0] for h in histories)  # every rank skips the same steps
    assert len(histories[0]) == steps
    skipped = histories[0].count(False)
    # 2^40 halves to 2^16 or below before fp16 stops overflowing: at least 24 skips.
    assert skipped >= 20 and histories[0][0] is False, histories[0]
    assert run["skipped"] == [skipped] * len(histories)
    assert len(set(run["scales"])) == 1  # halved (and grown) identically
    assert run["replicas_bit_equal"]


@pytest.mark.parametrize("case", ["fp16", "fp16_zero1"])
def test_fp16_overflow_skips_the_same_steps_on_every_rank(tmp_path_factory, framework,
                                                          controller, case: str) -> None:
    run = _results(tmp_path_factory, framework, controller)[case]
    _check_overflow(run, 200 if case == "fp16" else 60)
    if case == "fp16":
        assert run["test_accuracy"] >= 0.85, run  # and it converges once the scale is right


def test_fp16_overflow_in_two_stages_times_two_replicas(tmp_path_factory, framework) -> None:
    out = _job(tmp_path_factory, framework, "hybrid")
    _check_overflow(json.loads((out / "hybrid.json").read_text())["fp16_hybrid"], 60)


def test_fp16_stopped_and_resumed_ends_bit_for_bit(tmp_path_factory, framework) -> None:
    r = _results(tmp_path_factory, framework, "mpi")
    assert r["resume_bit_equal"], r["resume_exchange"]
    assert 2 <= r["resume_exchange"]["skipped_steps"] < 30


def test_compiled_equals_eager(tmp_path_factory, framework) -> None:
    r = _results(tmp_path_factory, framework, "mpi")
    assert r["compile_vs_eager"] <= TOLERANCE
    assert r["compile_seconds"] > 0


def test_digits_cnn_reaches_95_percent_in_bf16(tmp_path_factory, framework) -> None:
    assert _results(tmp_path_factory, framework, "mpi")["digits_cnn_bf16_accuracy"] >= 0.95
