"""Elastic jobs on one machine: names of one machine count as one, threads follow the ranks
on the machine, and the progress line stays right when the job changes size."""

from __future__ import annotations

import io
import os
import stat

import pytest

from hvdkit.errors import UserError
from hvdkit.launch.machines import (
    ENV,
    discovered_hosts,
    elastic_interface,
    machine_env,
    ranks_per_machine,
)
from hvdkit.runtime.world import cores, default_threads, ranks_on_machine
from hvdkit.training.callbacks import ProgressBar


def test_aliases_of_this_machine_are_one_machine() -> None:
    assert ranks_per_machine([("localhost", 1), ("127.0.0.1", 1)], 2) == \
        {"localhost": 2, "127.0.0.1": 2}
    # ranks fill the hosts in order, up to -np; another machine counts on its own
    assert ranks_per_machine([("localhost", 2), ("127.0.0.1", 2), ("192.0.2.7", 2)], 3) == \
        {"localhost": 3, "127.0.0.1": 3, "192.0.2.7": 0}
    assert ranks_per_machine([("192.0.2.7", 1), ("localhost", 4)], 3) == \
        {"192.0.2.7": 1, "localhost": 2}


def test_ranks_read_their_machine_count(monkeypatch, tmp_path) -> None:
    script = tmp_path / "discover.sh"
    script.write_text("#!/bin/sh\necho localhost:1\necho 127.0.0.1:1\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    assert discovered_hosts(str(script)) == [("localhost", 1), ("127.0.0.1", 1)]
    env = machine_env(discovered_hosts(str(script)), 2)
    assert env == {ENV: "localhost=2,127.0.0.1=2"}
    monkeypatch.setenv(ENV, env[ENV])
    monkeypatch.setenv("HOROVOD_HOSTNAME", "127.0.0.1")
    assert ranks_on_machine(local_size=1) == 2  # Horovod's own count says 1 per name
    assert default_threads(1) == max(1, cores() // 2)
    monkeypatch.delenv("HOROVOD_HOSTNAME")
    assert ranks_on_machine(local_size=1) == 1 and default_threads(1) == cores()


def test_a_failing_discovery_script_is_named(tmp_path) -> None:
    script = tmp_path / "bad.sh"
    script.write_text("#!/bin/sh\necho 'no hosts file' >&2\nexit 1\n")
    os.chmod(script, 0o755)
    with pytest.raises(UserError, match=r"bad\.sh failed: no hosts file"):
        discovered_hosts(str(script))


def test_progress_follows_a_new_total_and_never_passes_100_percent(monkeypatch) -> None:
    clock = iter(float(t) for t in range(1000))
    monkeypatch.setattr("hvdkit.training.callbacks.time.perf_counter", lambda: next(clock))
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, min_interval_s=5)
    bar.on_train_begin({"total_steps": 176, "epochs": 2})
    logs = {"loss": 1.0, "accuracy": 0.5, "samples_per_sec": 10.0, "epoch": 0}
    for step in range(100):
        bar.on_step_end(step, {**logs, "total_steps": 176})
    for step in range(90, 322):  # the job lost a worker: rolled back, more steps at np=1
        bar.on_step_end(step, {**logs, "total_steps": 322})
    lines = stream.getvalue().splitlines()
    assert 10 < len(lines) < 100  # one line per interval, not per step
    assert lines[-1].startswith("[hvdkit] epoch 1/2 step 322/322 (100%)")
    assert all("-" not in line.split("eta")[1] for line in lines)
    percents = [int(line.split("(")[1].split("%")[0]) for line in lines]
    assert max(percents) == 100


def test_one_host_elastic_gets_loopback_or_names_the_flag() -> None:
    assert elastic_interface([("localhost", 2)], None) == "lo"
    assert elastic_interface([("localhost", 1), ("127.0.0.1", 1)], None) is None
    assert elastic_interface([("192.0.2.7", 2)], "eth1") == "eth1"
    with pytest.raises(UserError, match="needs --network-interface"):
        elastic_interface([("192.0.2.7", 2)], None)
