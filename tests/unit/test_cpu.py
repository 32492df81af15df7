"""hvdkit.runtime.cpu: the ISA and native precisions read from /proc/cpuinfo's text."""

from __future__ import annotations

from hvdkit.runtime.cpu import parse_cpuinfo

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2
processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2
"""
SAPPHIRE_RAPIDS = """model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 avx512_fp16
"""
CASCADE_LAKE = """model name\t: Intel(R) Xeon(R) Gold 6230
flags\t\t: avx avx2 avx512f avx512bw avx512_vnni
"""


def test_an_avx2_host_emulates_both_low_precisions() -> None:
    cpu = parse_cpuinfo(EPYC)
    assert (cpu.model, cpu.isa) == ("AMD EPYC", "AVX2")
    assert cpu.native("fp32") and not cpu.native("bf16") and not cpu.native("fp16")


def test_avx512_hosts_differ_in_what_they_compute_natively() -> None:
    spr, clx = parse_cpuinfo(SAPPHIRE_RAPIDS), parse_cpuinfo(CASCADE_LAKE)
    assert spr.isa == clx.isa == "AVX512"
    assert spr.native("bf16") and spr.native("fp16")
    assert not clx.native("bf16") and not clx.native("fp16")


def test_no_flags_is_the_baseline() -> None:
    cpu = parse_cpuinfo("")
    assert cpu.isa == "baseline" and not cpu.native("bf16") and cpu.model


def test_an_arm_host_with_the_bf16_extension_computes_it_natively() -> None:
    cpu = parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd asimdhp bf16 sve\n")
    assert cpu.native("bf16") and cpu.native("fp16") and cpu.isa == "baseline"
