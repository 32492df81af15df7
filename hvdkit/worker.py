"""A rank's entry point: what every rank of a job launched by `hvdkit train` runs.

    python -m hvdkit.worker RUN_DIR

The launcher (hvdkit.launch.train) resolves the recipe and the run's options once and saves them
as a `TrainJob`: in RUN_DIR/job.json for the record, and in the ranks' environment
(`HVDKIT_JOB`), which reaches ranks on hosts that do not share the run folder. A rank reads it
here and trains; it never parses `hvdkit train`'s arguments. A job started by someone else's
mpirun or srun enters through `hvdkit train` instead, which calls `train` below in each rank.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hvdkit.errors import UserError
from hvdkit.recipe import Recipe, recipe_from_dict
from hvdkit.runtime.jobdir import JobDir
from hvdkit.runtime.quick_exit import quick_exit
from hvdkit.runtime.rank import run_worker
from hvdkit.runtime.stop import exit_code, stopped_line
from hvdkit.training.checkpoint import checkpoint_path

JOB_FILE = "job.json"
JOB_ENV = "HVDKIT_JOB"


@dataclass
class TrainJob:
    """One training job as every rank runs it: the resolved recipe and the run's options."""

    recipe: dict[str, Any]
    """The resolved recipe (`Recipe.to_dict()`, overrides applied)."""
    framework: str
    recipe_source: str = "<recipe>"
    """Where the recipe came from, for messages."""
    recipe_folder: str | None = None
    """The recipe file's folder, where builders are looked for first."""
    run_dir: str | None = None
    """The run folder; None: rank 0 picks runs/<recipe>-<framework>-np<N>-<time>."""
    progress: bool = True
    tensorboard: bool = True
    resume: str | None = None
    elastic: bool = False
    launch: dict[str, Any] = field(default_factory=dict)
    """How the job was launched (recorded in config.yaml)."""
    launcher_reports: bool = False
    """The launcher prints the closing `done` line itself (Ray may drop an actor's last lines)."""

    def load_recipe(self) -> Recipe:
        recipe = recipe_from_dict(self.recipe, source=self.recipe_source)
        recipe.folder = self.recipe_folder  # type: ignore[misc]
        return recipe

    def encoded(self) -> str:
        """The job as one environment-safe word (base64 of its JSON)."""
        return base64.b64encode(json.dumps(asdict(self)).encode()).decode()

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / JOB_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def read_job(run_dir: str) -> TrainJob:
    """The job this rank runs: from the environment, else from RUN_DIR/job.json."""
    if os.environ.get(JOB_ENV):
        return TrainJob(**json.loads(base64.b64decode(os.environ[JOB_ENV])))
    path = Path(run_dir) / JOB_FILE
    if not path.is_file():
        raise UserError(f"{path} does not exist: start ranks with `hvdkit train`, which "
                        "writes it, or run `hvdkit train` itself inside your job")
    return TrainJob(**json.loads(path.read_text()))


def done_line(framework: str, summary: dict[str, Any]) -> str:
    """The run's closing line."""
    accuracy = summary.get("test_accuracy")
    perplexity = summary.get("test_perplexity")
    if perplexity is not None:  # a language model: what its users compare
        shown = f"test perplexity {perplexity:.2f}"
    elif accuracy is not None:
        shown = f"test accuracy {accuracy:.4f}"
    else:
        shown = "no evaluation"
    inputs = summary.get("input", {})
    if "decoded_per_sec_per_worker" in inputs:  # images: say whether the data kept up
        shown += (f", data wait {100 * inputs.get('data_wait_share', 0):.0f}% with "
                  f"{inputs['decoders_per_rank']} decoder(s) a rank")
    return (f"[hvdkit] done: {framework} np={summary['np']} {shown}, "
            f"{summary['samples_per_sec']:.0f} samples/s, run files in {summary.get('run_dir')}")


def run_record(trainer: Any) -> dict[str, Any]:
    """Where a fitted run ended: its step, run folder, and the checkpoint of that step (None
    where none was written)."""
    checkpointer, step = trainer.checkpointer, trainer.position.step
    saved = checkpointer.directory is not None and checkpointer.last_saved == step
    return {"step": step, "run_dir": str(trainer.run_dir) if trainer.run_dir else None,
            "checkpoint": str(checkpoint_path(checkpointer.directory, step)) if saved else None}


def finish_stopped(trainer: Any) -> int:
    """After `trainer.fit()` stopped on a signal: rank 0 tells the launcher where it stopped,
    or says it itself when there is no hvdkit launcher. The exit code: 0 in a job whose
    launcher reports the stop (horovodrun then stays quiet), else 130 or 143."""
    record = {"signal": trainer.stop.signum, **run_record(trainer)}
    job, is_root = JobDir.from_env(), trainer.world.is_root
    if job is not None:
        if is_root:
            job.report_stopped(record)
        return 0
    if is_root:
        print(stopped_line(record, sys.argv[1:]), file=sys.stderr, flush=True)
    return exit_code(record["signal"])


def train(job: TrainJob) -> int:
    """Train `job` in this process, one rank of it; failures name the rank, exit non-zero."""
    from hvdkit.trainer import Trainer

    def train_here() -> int:
        trainer = Trainer(job.load_recipe(), job.framework, run_dir=job.run_dir or "auto",
                          progress=job.progress, tensorboard=job.tensorboard,
                          launch_info=job.launch or {"launched_by": "external"},
                          resume=job.resume, elastic=job.elastic)
        summary = trainer.fit()
        if summary.get("interrupted"):  # SIGINT/SIGTERM: stopped at a step with a checkpoint
            return finish_stopped(trainer)
        if trainer.world is not None and trainer.world.is_root:
            control = JobDir.from_env()
            if control is not None:  # a stop from now on finds nothing left to save
                control.report_completed(run_record(trainer))
            if not job.launcher_reports:
                print(done_line(job.framework, summary), flush=True)
        return 0

    return run_worker(train_here)


def run(run_dir: str) -> int:
    """Read the job saved for RUN_DIR and train it as this rank."""
    try:
        job = read_job(run_dir)
    except UserError as exc:
        print(f"hvdkit: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return train(job)


def main(argv: list[str] | None = None) -> int:
    """`python -m hvdkit.worker RUN_DIR`; a process of its own ends without the slow
    interpreter teardown once it trained (hvdkit.runtime.quick_exit)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hvdkit.worker RUN_DIR", file=sys.stderr)
        return 2
    code = run(args[0])
    if argv is None and code == 0:
        quick_exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
