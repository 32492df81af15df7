"""`hvdkit tune`'s search and this machine's defaults, without launching jobs: the trial
runner is replaced by a table of made-up rates; `hvdkit train`'s flag filling is checked on
parsed arguments."""

from __future__ import annotations

import os

import pytest
import yaml

from hvdkit import cli
from hvdkit.bench import tune
from hvdkit.errors import UserError
from hvdkit.launch.defaults import apply_machine_defaults, load_defaults, save_defaults


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HVDKIT_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("HVDKIT_NO_MACHINE_DEFAULTS", raising=False)
    for name in ("HOROVOD_FUSION_THRESHOLD", "HOROVOD_CYCLE_TIME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_tune_keeps_clear_wins_and_saves_them(config_dir, tmp_path, monkeypatch):
    def fake_rate(recipe, settings, np_, framework, steps, overrides, out, index):
        rate = 100.0
        rate *= 1.5 if settings["threads"] == 1 else 1.0
        rate *= 1.2 if settings["cycle_time_ms"] == 5.0 else 1.0
        rate *= 1.01 if settings["controller"] == "gloo" else 1.0  # within noise: not taken
        return rate

    monkeypatch.setattr(tune, "run_settings", fake_rate)
    monkeypatch.setattr(tune, "cores", lambda: 4)
    result = tune.run_tune("r.yaml", np_=2, out=tmp_path / "t")
    assert result["best"] == {"controller": "mpi", "yield_when_idle": True, "threads": 1,
                              "fusion_threshold_mb": None, "cycle_time_ms": 5.0}
    saved = yaml.safe_load((config_dir / "defaults.yaml").read_text())
    entry = saved["by_ranks_per_host"][2]
    assert entry["settings"]["threads"] == 1 and entry["measured"]["np"] == 2


def test_train_flags_take_saved_defaults_and_flags_win(config_dir, monkeypatch):
    save_defaults({"controller": "gloo", "yield_when_idle": False, "threads": 1,
                   "fusion_threshold_mb": 8.0, "cycle_time_ms": 5.0}, {})
    args = cli.parse_args(["train", "r.yaml", "--controller", "mpi"])
    monkeypatch.setattr(os, "environ", dict(os.environ))
    applied = apply_machine_defaults(args)
    assert (args.controller, args.yield_when_idle, args.threads) == ("mpi", False, 1)
    assert os.environ["HOROVOD_FUSION_THRESHOLD"] == str(8 * 2**20)
    assert os.environ["HOROVOD_CYCLE_TIME"] == "5.0"
    assert "controller" not in applied["applied"] and applied["applied"]["threads"] == 1


def test_no_file_means_built_in_defaults(config_dir):
    args = cli.parse_args(["train", "r.yaml"])
    assert apply_machine_defaults(args) is None
    assert (args.controller, args.yield_when_idle, args.threads) == ("mpi", True, None)


def test_unknown_setting_names_the_file(config_dir):
    (config_dir / "defaults.yaml").write_text("settings: {fusion: 1}\n")
    with pytest.raises(UserError, match="unknown setting 'fusion'"):
        load_defaults(1)


def test_defaults_apply_only_at_the_ranks_per_host_they_were_measured_at(config_dir, monkeypatch):
    from hvdkit.launch.defaults import load_table, ranks_per_host

    monkeypatch.setattr(os, "environ", dict(os.environ))
    save_defaults({"threads": 1, "controller": "gloo"}, {"np": 2})
    save_defaults({"threads": 2}, {"np": 1})
    assert sorted(load_table()) == [1, 2]
    one = cli.parse_args(["train", "r.yaml"])
    assert apply_machine_defaults(one)["applied"] == {"threads": 2}
    four = cli.parse_args(["train", "r.yaml", "-np", "4"])
    assert apply_machine_defaults(four) is None and four.threads is None
    two = cli.parse_args(["train", "r.yaml", "-np", "4", "-H", "a:2,b:2"])
    assert apply_machine_defaults(two)["applied"] == {"threads": 1, "controller": "gloo"}
    assert ranks_per_host(3, hosts="a:2,b:2") == 2 and ranks_per_host(2, hosts="a,b") == 1
    # a file from before: flat settings, measured at its np
    (config_dir / "defaults.yaml").write_text("settings: {threads: 1}\nmeasured: {np: 2}\n")
    assert load_defaults(2) == {"threads": 1} and load_defaults(1) == {}
