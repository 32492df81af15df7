"""Run folder safety: a new run never writes into a folder that holds another run's files.

Checked by `hvdkit train` before any rank starts (and by rank 0 of a job started by another
launcher, srun or mpirun). A folder holding a run (its config, metrics, summary, checkpoints or
TensorBoard logs) is taken only by `--resume` of that same run, which continues in it, or with
`--overwrite`, which deletes those files first. Anything else exits 2 with one line.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from hvdkit.errors import UserError

RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints", "tensorboard",
             "export")
"""What a run writes into its folder; a folder holding any of them holds a run."""


def held_run_files(run_dir: Path) -> list[str]:
    """The run files in `run_dir` (none when it does not exist)."""
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def prepare_run_dir(run_dir: str | Path, resume: str | None, overwrite: bool) -> None:
    """Refuse, or clear with `overwrite`, a run folder that holds another run's files."""
    run_dir = Path(run_dir)
    held = held_run_files(run_dir)
    resumes_here = resume is not None and _inside(Path(run_dir) if resume == "latest"
                                                  else Path(resume), run_dir)
    if overwrite:
        if resumes_here:
            raise UserError(f"--overwrite would delete the checkpoint that --resume continues "
                            f"from in {run_dir}; give one or the other")
        for name in held:
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return
    if held and not resumes_here:
        raise UserError(f"run folder {run_dir} holds another run ({', '.join(held)}); continue "
                        f"it with --resume latest, replace it with --overwrite, or choose "
                        f"another --run-dir")


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def new_run_dir(name: str, framework: str, np_: int, root: str | Path = "runs") -> Path:
    """A new run folder, runs/<name>-<framework>-np<N>-<time>, made here so that no other run
    takes it: two runs started in the same second get `-2`, `-3`, ... (mkdir is atomic)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{name}-{framework}-np{np_}-{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise UserError(f"no free run folder next to {base}; give --run-dir")
