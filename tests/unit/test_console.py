"""The launcher's console: mpirun/horovodrun tags out, pieces of a line joined, rank 0 clean,
other ranks' problems prefixed and shown once, framework start-up noise dropped."""

from __future__ import annotations

import io

from hvdkit.launch.console import Console, is_noise

TF_NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795676104.335217    9190 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors.",
    "I0000 00:00:1795676138.496111    9948 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
]


def relay(*lines: str, verbose: bool = False) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    console = Console(verbose=verbose, out=out, err=err)
    for line in lines:
        console.feed(line)
    console.close()
    return out.getvalue(), err.getvalue()


def test_rank0_lines_are_clean_and_joined_on_their_own_stream() -> None:
    out, err = relay(
        "[1,0]<stderr>:[hvdkit] step 1/22 loss 2.31 12179 samples/s[1,0]<stderr>:\n",
        "[1,0]<stderr>:[hvdkit] epoch 1/1 | test accuracy[1,1]<stderr>:rank 1's error\n",
        "[1,0]<stderr>: 0.6323\n",
        "[1,0]<stdout>:[hvdkit] done: torch np=2\n")
    assert out == "[hvdkit] done: torch np=2\n"
    assert err == ("[hvdkit] step 1/22 loss 2.31 12179 samples/s\n"
                   "rank 1: rank 1's error\n"
                   "[hvdkit] epoch 1/1 | test accuracy 0.6323\n")
    assert "<std" not in out + err


def test_gloo_tags_and_untagged_launcher_lines() -> None:
    out, err = relay("[0]<stdout>:hello\n", "Primary job terminated normally\n",
                     "[1]<stdout>:rank 1 chatter\n", "[1]<stderr>:Traceback (most recent)\n")
    assert out == "hello\n"
    assert err == "Primary job terminated normally\nrank 1: Traceback (most recent)\n"


def test_a_warning_shows_once_with_its_source_line() -> None:
    warning = "/x/model.py:3: UserWarning: lr is large"
    _, err = relay(f"[1,1]<stderr>:{warning}\n", "[1,1]<stderr>:  warnings.warn(...)\n",
                     f"[1,0]<stderr>:{warning}\n", "[1,0]<stderr>:  warnings.warn(...)\n",
                     f"[1,2]<stderr>:{warning}\n", "[1,2]<stderr>:  warnings.warn(...)\n",
                     "[1,0]<stderr>:next\n", "[1,0]<stderr>:  indented, not a warning\n")
    assert err == (f"rank 1: {warning}\nrank 1:   warnings.warn(...)\n"
                   "next\n  indented, not a warning\n")


def test_framework_start_up_noise_is_dropped_on_every_rank() -> None:
    assert all(is_noise(line) for line in TF_NOISE)
    lines = [f"[1,{rank}]<stderr>:{line}\n" for rank in (0, 1) for line in TF_NOISE]
    assert relay(*lines, *(line + "\n" for line in TF_NOISE)) == ("", "")
    assert not is_noise("W0000 00:00:1795676104.3 9190 trainer.cc:12] my own warning")


def test_verbose_relays_everything_raw() -> None:
    lines = ["[1,0]<stderr>:a[1,0]<stderr>:\n", f"{TF_NOISE[0]}\n", "[1,1]<stdout>:b\n"]
    assert relay(*lines, verbose=True) == ("".join(lines), "")
