"""The one layout check (hvdkit.layout): every rule, from the recipe loader, the CLI before
launching, and inside a job before the framework loads — each one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hvdkit.cli import main as cli_main
from hvdkit.errors import UserError
from hvdkit.layout import ParallelLayout
from hvdkit.recipe import recipe_from_dict

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = str(ROOT / "recipes" / "pipeline_mlp.yaml")
DIGITS = str(ROOT / "recipes" / "digits_mlp.yaml")


def _recipe(hidden: list[int] | None = None, batch: int = 32, **parallel: object):
    return recipe_from_dict({"model": {"name": "mlp", "hidden": hidden or [16]},
                             "data": {"name": "digits"}, "optimizer": {"name": "sgd"},
                             "train": {"batch_size": batch}, "parallel": parallel})


def test_layout_puts_a_pipeline_on_neighbouring_ranks() -> None:
    layout = ParallelLayout.from_recipe(_recipe([16, 16], stages=2, microbatches=4), 4)
    assert (layout.stage_of(3), layout.replica_of(3), layout.replicas) == (1, 1, 2)
    assert layout.stage_ranks(0) == [0, 2]
    assert layout.devices(1, "cpu") == ["cpu"]


def test_virtual_stages_cut_the_model_into_more_chunks() -> None:
    layout = ParallelLayout.from_recipe(_recipe([16, 16, 16], stages=2, microbatches=4,
                                                schedule="interleaved", virtual_stages=2), 2)
    assert (layout.parts, layout.virtual_stages) == (4, 2)


def test_placement_runs_data_parallel_over_every_rank() -> None:
    layout = ParallelLayout.from_recipe(_recipe([16, 16], placement=["cpu", "cpu"]), 2)
    assert (layout.stages, layout.replicas, layout.parts) == (1, 2, 2)
    assert layout.devices(0, "cpu") == ["cpu", "cpu"]


def test_only_pipelines_and_the_parameter_server_call_mpi4py() -> None:
    """They start MPI on the main thread before Horovod (hvdkit.runtime.mpi); the rest not."""
    uses = {name: ParallelLayout.from_recipe(_recipe([16, 16], **parallel), 2).uses_mpi4py
            for name, parallel in {"pipeline": {"stages": 2, "microbatches": 4},
                                   "ps": {"sync": "ps"}, "ring": {},
                                   "placement": {"placement": ["cpu", "cpu"]}}.items()}
    assert uses == {"pipeline": True, "ps": True, "ring": False, "placement": False}


@pytest.mark.parametrize("parallel,message", [
    ({"stages": 3}, "only 2 layers"),
    ({"placement": ["cpu", "cpu", "cpu"]}, "parallel.placement cuts model mlp into 3 parts"),
    ({"stages": 2, "microbatches": 5}, "must divide by parallel.microbatches"),
    ({"stages": 2, "accumulation": 2}, "parallel.accumulation 1"),
    ({"stages": 2, "reduction": "adasum"}, "adasum is not supported in a pipeline"),
    ({"microbatches": 2}, "needs parallel.stages > 1"),
    ({"stages": 2, "placement": ["cpu"]}, "one device per stage"),
    ({"stages": 2, "boundaries": [2]}, "rise strictly"),
    ({"boundaries": [1]}, "parallel.boundaries needs parallel.stages > 1 or a placement"),
    ({"stages": 0}, "parallel.stages must be at least 1"),
    ({"accumulation": 0}, "parallel.accumulation must be at least 1"),
    ({"sync": "ps", "reduction": "adasum"}, "adasum needs parallel.sync allreduce"),
    ({"placement": ["tpu:0"]}, "unknown device 'tpu:0'"),
    ({"stages": 2, "virtual_stages": 2}, "virtual_stages 2 needs parallel.schedule interleaved"),
    ({"virtual_stages": 0}, "parallel.virtual_stages must be at least 1"),
    ({"stages": 2, "microbatches": 2, "schedule": "interleaved", "virtual_stages": 2},
     r"parallel.stages x parallel.virtual_stages cuts model mlp into 4 parts"),
    ({"stages": 3, "microbatches": 4, "schedule": "interleaved"},
     r"interleaved needs parallel.microbatches \(4\) to be a multiple of parallel.stages"),
])
def test_recipe_errors_name_the_field(parallel: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        _recipe(**parallel)


@pytest.mark.parametrize("size,controller,elastic,parallel,message", [
    (3, "mpi", False, {"stages": 2}, "world size 3 is not parallel.stages (2)"),
    (2, "gloo", False, {"stages": 2}, "needs an MPI launch; use --controller mpi"),
    (2, "gloo", True, {"stages": 2}, "needs an MPI launch"),
    (2, "mpi", True, {"stages": 2}, "cannot run elastic"),
    (2, "gloo", False, {"sync": "ps"}, "parallel.sync ps sends gradients with mpi4py"),
    (2, "gloo", True, {"sync": "ps"}, "parallel.sync ps sends gradients with mpi4py"),
])
def test_launch_errors_name_the_field(size: int, controller: str, elastic: bool,
                                      parallel: dict, message: str) -> None:
    recipe = _recipe([16, 16], **parallel)  # the recipe alone is fine
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ParallelLayout.from_recipe(recipe, size, controller, elastic)


def test_a_valid_pipeline_recipe_loads() -> None:
    r = _recipe([16, 16], stages=3, microbatches=8, schedule="gpipe", boundaries=[1, 2])
    assert (r.parallel.stages, r.parallel.schedule) == (3, "gpipe")


@pytest.mark.parametrize("recipe,argv,message", [
    (PIPELINE, ["-np", "3"], "world size 3 is not parallel.stages (2)"),
    (PIPELINE, ["-np", "2", "--controller", "gloo"], "needs an MPI launch"),
    (PIPELINE, ["-np", "2", "--set", "parallel.stages=4"], "only 3 layers"),
    (PIPELINE, ["-np", "2", "--set", "train.batch_size=30"], "must divide by"),
    (DIGITS, ["-np", "2", "--set", "parallel.placement=[cpu,cpu,cpu,cpu]"], "into 4 parts"),
    (DIGITS, ["-np", "2", "--controller", "gloo", "--set", "parallel.sync=ps"], "mpi4py"),
])
def test_cli_refuses_bad_layouts_before_launching(capsys, monkeypatch, recipe: str,
                                                  argv: list[str], message: str) -> None:
    monkeypatch.setenv("HVDKIT_NO_MACHINE_DEFAULTS", "1")  # a tuned controller must not matter
    assert cli_main(["train", recipe, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("env,argv,message", [
    ({"HOROVOD_SIZE": "2", "HOROVOD_RANK": "1", "HOROVOD_CONTROLLER": "gloo"}, [],
     "needs an MPI launch"),
    ({"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "2"}, [],
     "world size 3 is not parallel.stages (2)"),
    ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"},
     ["--set", "parallel.microbatches=3"], "must divide by parallel.microbatches 3"),
])
def test_a_worker_refuses_a_bad_layout_before_its_framework_loads(env: dict, argv: list[str],
                                                                  message: str) -> None:
    """Inside a job (a launcher's rank variables set), as under mpirun or srun directly."""
    code = ("import sys; from hvdkit.cli import main; rc = main(sys.argv[1:]); "
            "print(sorted(m for m in ('torch', 'tensorflow', 'horovod') if m in sys.modules)); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "train", PIPELINE, *argv],
                          env={**os.environ, **env}, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("hvdkit: error") and message in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert proc.stdout.strip() == "[]"
