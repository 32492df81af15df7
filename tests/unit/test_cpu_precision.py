"""train.precision bf16 / fp16 on a CPU that only emulates it: refused in one line (exit 2,
before any worker) unless train.precision_force; never on a GPU or a CPU that has it."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hvdkit.errors import UserError
from hvdkit.runtime.cpu import cpu_features, parse_cpuinfo
from hvdkit.runtime.cpu_precision import check_cpu_precision, device_is_cpu, train_on_cpu

ROOT = Path(__file__).resolve().parents[2]
AVX2 = parse_cpuinfo("model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n")
SAPPHIRE = parse_cpuinfo("model name\t: Xeon\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 "
                         "avx512_fp16 amx_fp16\n")


def test_emulated_precision_is_refused_unless_forced() -> None:
    with pytest.raises(UserError) as refused:
        check_cpu_precision("bf16", False, True, "r.yaml", cpu=AVX2)
    assert str(refused.value) == (
        "r.yaml: train.precision bf16: this CPU (AVX2) has no AVX512_BF16, AMX_BF16 or BF16, so "
        "it is emulated: a step ran 2x (a small CNN) to 13x (ResNet-18) slower than in fp32 on an "
        "AVX2 CPU; use train.precision fp32, or set train.precision_force: true to run it "
        "anyway")
    with pytest.raises(UserError,
                       match=r"no AVX512_FP16, AMX_FP16 or ASIMDHP.* to 14x \(ResNet-18\)"):
        check_cpu_precision("fp16", False, True, cpu=AVX2)
    check_cpu_precision("bf16", True, True, cpu=AVX2)  # forced
    check_cpu_precision("fp32", False, True, cpu=AVX2)
    check_cpu_precision("bf16", False, False, cpu=AVX2)  # on a GPU
    for precision in ("bf16", "fp16"):  # native
        check_cpu_precision(precision, False, True, cpu=SAPPHIRE)
    check_cpu_precision("bf16", False, True, cpu=parse_cpuinfo(""))  # unknown: not judged


def test_where_the_ranks_train() -> None:
    assert train_on_cpu("cpu", multi_host=True)
    assert not train_on_cpu("gpu", multi_host=False)
    assert not train_on_cpu("auto", multi_host=True)  # other hosts: their ranks check
    assert [device_is_cpu(d) for d in ("cpu", "/CPU:0", "cuda:0", "/GPU:0")] == [
        True, True, False, False]


def test_auto_without_a_visible_gpu_is_the_cpu(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert train_on_cpu("auto", multi_host=False)


@pytest.mark.skipif(cpu_features().native("bf16"), reason="this CPU computes bf16 natively")
def test_cli_refuses_emulated_bf16_before_any_worker(tmp_path: Path) -> None:
    recipe = tmp_path / "bf16.yaml"
    recipe.write_text("model: {name: mlp}\ndata: {name: digits}\noptimizer: {name: sgd}\n"
                      "train: {precision: bf16, device: cpu}\n")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hvdkit", "train", str(recipe), "-np", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"hvdkit: error: {recipe}: train.precision bf16: this CPU")
    assert "train.precision_force: true" in line and "launching" not in done.stderr
    assert time.perf_counter() - started < 30


def test_a_resumed_run_may_add_precision_force() -> None:
    """A run started on a GPU in bf16 may go on on a CPU that emulates it (train.device and
    train.precision_force both resumable)."""
    from hvdkit.recipe import recipe_from_dict
    from hvdkit.training.checkpoint import resume_key

    data = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "sgd"},
            "train": {"precision": "bf16", "device": "gpu"}}
    forced = {**data, "train": {"precision": "bf16", "device": "cpu", "precision_force": True}}
    assert resume_key(recipe_from_dict(data)) == resume_key(recipe_from_dict(forced))
