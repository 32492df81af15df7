"""Harness overhead and the peer comparison, np=2, 1 thread per rank.

- hvdkit steps/s ÷ a hand-written Horovod loop (same model, data, batch; its data set
  resident), both frameworks, the two interleaved every 5 steps inside one job (target ≥ 0.97);
- hvdkit PyTorch ÷ PyTorch DDP (gloo), separate jobs alternated over `--rounds` rounds (target
  ≥ 1.0). Each round runs, one job each and in turn: `hvdkit train` (the samples/s of its
  barrier-timed window) with its tuned host allocator and with glibc's defaults
  (`train.host_allocator`, hvdkit/runtime/allocator.py), the plain Horovod loop (mpirun, as
  hvdkit's ranks), DDP from torch's own spawn as a user runs it, and that DDP with hvdkit's
  allocator settings given through glibc's environment (benchmarks/workers/peer.py). The ratios
  are medians over the rounds of each round's ratio, so the machine's drift between rounds
  cancels.

    python benchmarks/bench_overhead.py [--segments 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.jobs import json_line, versus_hand_written  # noqa: E402
from hvdkit.launch.job import job_command  # noqa: E402
from hvdkit.launch.options import LaunchOptions  # noqa: E402
from hvdkit.runtime.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD  # noqa: E402

RECIPE = "recipes/synthetic_cnn.yaml"
STEPS, WARMUP = 160, 10  # per job; the peers' warm-up is benchmarks/workers/peer.py's


# What hvdkit's tuned allocator sets with mallopt, as glibc reads it from the environment.
TUNED_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
             "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def hvdkit_train(run_dir: Path, allocator: str) -> float:
    """Samples/s of `hvdkit train` on the recipe at np=2 (its barrier-timed window)."""
    command = [sys.executable, "-m", "hvdkit", "train", RECIPE, "-f", "torch", "-np", "2",
               "--threads", "1", "--run-dir", str(run_dir), "--overwrite",
               "--set", f"train.host_allocator={allocator}",
               "--set", "train.epochs=100", "--set", f"train.max_steps={STEPS}",
               "--set", f"train.timing_warmup_steps={WARMUP}",
               "--set", "train.eval_every_epochs=100"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"hvdkit train failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return json.loads((run_dir / "summary.json").read_text())["timed"]["samples_per_sec"]


def peer(loop: str, env: dict[str, str] | None = None) -> float:
    """Samples/s of a peer loop at np=2: Horovod's under the mpirun hvdkit's ranks get, DDP
    from torch's own spawn."""
    program = [sys.executable, "benchmarks/workers/peer.py", "--loop", loop,
               "--steps", str(STEPS)]
    command = job_command(LaunchOptions(np=2), program) if loop == "horovod" else program
    return json_line(command, env)["samples_per_sec"]


def versus_ddp(rounds: int) -> dict[str, float]:
    """hvdkit and the peers in separate jobs, alternated; medians of the per-round ratios."""
    jobs = {"hvdkit": lambda run: hvdkit_train(run, "tuned"),
            "hvdkit_system_malloc": lambda run: hvdkit_train(run, "system"),
            "horovod_loop": lambda run: peer("horovod"),
            "ddp": lambda run: peer("ddp"),
            "ddp_tuned_malloc": lambda run: peer("ddp", env=TUNED_ENV)}
    names = tuple(jobs)
    rates: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, job in jobs.items():
                rates[name].append(job(Path(tmp) / "run"))
            print(f"round {r + 1}: " + " | ".join(f"{n} {rates[n][-1]:.0f}" for n in names)
                  + " samples/s", flush=True)

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))

    result = {"vs_ddp": ratio("hvdkit", "ddp"),
              "vs_ddp_tuned_malloc": ratio("hvdkit", "ddp_tuned_malloc"),
              "system_malloc_vs_ddp": ratio("hvdkit_system_malloc", "ddp"),
              "tuned_vs_system_malloc": ratio("hvdkit", "hvdkit_system_malloc"),
              "horovod_loop_vs_ddp": ratio("horovod_loop", "ddp")}
    print(f"torch np=2 over {rounds} alternated rounds, medians: "
          + ", ".join(f"{n} {statistics.median(rates[n]):.0f}" for n in names) + " samples/s")
    print(" | ".join(f"{name} {value:.3f}" for name, value in result.items()))
    print(f"hvdkit / DDP {result['vs_ddp']:.3f} (target >= 1.0; DDP with hvdkit's allocator "
          f"settings: {result['vs_ddp_tuned_malloc']:.3f})")
    return result


def main(segments: int = 16, rounds: int = 5) -> dict[str, float]:
    ratios: dict[str, float] = {}
    for framework in ("torch", "tensorflow"):
        ratios[f"overhead_{framework}"], _ = versus_hand_written(RECIPE, framework, segments)
    ratios.update(versus_ddp(rounds))
    worst = min(ratios["overhead_torch"], ratios["overhead_tensorflow"])
    print(f"harness overhead ratio (hvdkit / hand-written Horovod, worse framework): {worst:.3f} "
          "(target >= 0.97)")
    return ratios


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ddp-only", action="store_true", help="only the alternated rounds")
    args = parser.parse_args()
    if args.ddp_only:
        versus_ddp(args.rounds)
    else:
        main(args.segments, args.rounds)
