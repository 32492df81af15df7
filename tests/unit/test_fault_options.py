"""Fault-tolerance options without a job: elastic and stall-inspector flags for horovodrun,
their errors, the rank named for a killed worker, and the loader's sample-counted position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hvdkit.data import ShardedLoader
from hvdkit.data.samples import ArraySamples
from hvdkit.errors import UserError
from hvdkit.launch.job import _RANK_FAILED, _RANK_LOST, horovodrun_command
from hvdkit.launch.options import LaunchOptions

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "launch" / "discover_hosts.sh")


def test_elastic_command_uses_gloo_and_the_discovery_script() -> None:
    options = LaunchOptions(np=2, elastic=True, min_np=1, max_np=4,
                            host_discovery_script=SCRIPT)
    options.validate()
    command = horovodrun_command(options, ["p"])
    assert "--gloo" in command and "--mpi" not in command and "-H" not in command
    assert command[command.index("--min-np") + 1] == "1"
    assert command[command.index("--max-np") + 1] == "4"
    assert command[command.index("--host-discovery-script") + 1] == SCRIPT


def test_stall_flags() -> None:
    command = horovodrun_command(
        LaunchOptions(np=2, stall_warning_seconds=5, stall_shutdown_seconds=30), ["p"])
    assert command[command.index("--stall-check-warning-time-seconds") + 1] == "5"
    assert command[command.index("--stall-check-shutdown-time-seconds") + 1] == "30"
    assert "--no-stall-check" in horovodrun_command(LaunchOptions(np=2, stall_check=False),
                                                    ["p"])
    assert not any("stall" in a for a in horovodrun_command(LaunchOptions(np=2), ["p"]))


@pytest.mark.parametrize("options, message", [
    (LaunchOptions(np=2, elastic=True), "needs --host-discovery-script"),
    (LaunchOptions(np=2, elastic=True, host_discovery_script="/nonexistent"), "not an exec"),
    (LaunchOptions(np=2, elastic=True, host_discovery_script=SCRIPT, min_np=3), "--min-np"),
    (LaunchOptions(np=2, elastic=True, host_discovery_script=SCRIPT, hosts="a:1"), "not --hosts"),
    (LaunchOptions(np=2, min_np=1), "need --elastic"),
    (LaunchOptions(np=2, stall_warning_seconds=10, stall_shutdown_seconds=5), "larger"),
])
def test_bad_fault_options(options: LaunchOptions, message: str) -> None:
    with pytest.raises(UserError, match=message):
        options.validate()


@pytest.mark.parametrize("line, rank", [
    ("[1]<stderr>:hvdkit: rank 1 failed:", 1),
    ("Terminating remaining workers after failure of Process 1.", 1),
    ("mpirun noticed that process rank 1 with PID 4242 on node host exited on signal 9 (Killed).",
     1),
])
def test_failed_rank_is_found(line: str, rank: int) -> None:
    match = _RANK_FAILED.search(line) or _RANK_LOST.search(line)
    assert match and int(next(g for g in match.groups() if g is not None)) == rank


def test_sample_position_resumes_at_another_world_size() -> None:
    x = np.arange(100, dtype=np.float32)[:, None]
    samples = ArraySamples(x, x[:, 0].astype(np.int64))
    two = [ShardedLoader(samples, batch_size=4, rank=r, size=2, seed=3) for r in range(2)]
    one = ShardedLoader(samples, batch_size=4, rank=0, size=1, seed=3)
    # Two ranks took 3 steps of 8 samples: one rank goes on from global sample 24.
    taken = np.concatenate([np.concatenate([b for b, _ in ld.batches(0)][:3]) for ld in two])
    rest = np.concatenate([b for b, _ in one.batches(0, start_sample=24)])
    assert sorted(np.concatenate([taken, rest])[:, 0].tolist()) == list(range(100))
    assert one.steps_left(24) == 19 and one.step_samples(96) == 4
