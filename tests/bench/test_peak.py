"""bench/peak.py: measured peaks are positive numbers, and the CPU's description parses /proc/cpuinfo texts of
the CPUs the figures come from. Nothing here asserts a time or depends on the CPU it runs on."""

from __future__ import annotations

import pytest
import torch

from bench.peak import Peaks, conv_tflops, machine_label, matmul_tflops, measure_peaks, parse_cpuinfo

COMMON = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht "
          "syscall nx lm constant_tsc rep_good nopl pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes "
          "xsave avx f16c rdrand hypervisor lahf_lm abm bmi1 avx2 smep bmi2 erms")


def cpuinfo(model: str, family: int, model_number: int, extra_flags: str, processors: int = 2) -> str:
    block = (f"vendor_id\t: {'GenuineIntel' if 'Intel' in model else 'AuthenticAMD'}\ncpu family\t: {family}\n"
             f"model\t\t: {model_number}\nmodel name\t: {model}\nstepping\t: 1\ncpu MHz\t\t: 2450.000\n"
             f"flags\t\t: {COMMON} {extra_flags}\nbogomips\t: 4900.00\n\n")
    return "".join(f"processor\t: {k}\n{block}" for k in range(processors))


AVX2_EPYC = cpuinfo("AMD EPYC 7B13", 25, 1, "sha_ni clzero")
ZEN4_EPYC = cpuinfo("AMD EPYC 9B14", 25, 17, "avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 "
                    "avx512_vnni avx512_bitalg")
AMX_XEON = cpuinfo("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", 6, 143, "avx512f avx512dq avx512bw "
                   "avx512vl avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8", processors=4)


@pytest.mark.parametrize("text, name, family, model, present, absent, cpus", [
    (AVX2_EPYC, "AMD EPYC 7B13", "25", "1", {"avx2", "fma"}, {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, 2),
    (ZEN4_EPYC, "AMD EPYC 9B14", "25", "17", {"avx2", "avx512f", "avx512_bf16"}, {"amx_tile", "amx_bf16",
                                                                                   "avx512_fp16"}, 2),
    (AMX_XEON, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "6", "143",
     {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"}, set(), 4),
], ids=["avx2-epyc", "zen4-epyc", "amx-xeon"])
def test_the_cpu_description_parses_cpuinfo(text, name, family, model, present, absent, cpus):
    cpu = parse_cpuinfo(text)
    assert (cpu.model, cpu.family, cpu.model_number, cpu.logical_cpus) == (name, family, model, cpus)
    assert present <= cpu.flags and not absent & cpu.flags
    label = cpu.label()
    assert label.startswith(f"{name} (family {family}, model {model}")
    assert all(f"{flag}+" in label for flag in present) and all(f"{flag}-" in label for flag in absent)


def test_a_cpuinfo_without_the_fields_still_describes_something():
    cpu = parse_cpuinfo("processor\t: 0\n")
    assert cpu.model == "unknown CPU" and cpu.flags == frozenset() and "avx2-" in cpu.label()


def test_the_peaks_of_a_tiny_matmul_and_conv_are_positive():
    assert matmul_tflops(torch.float32, "cpu", n=64, rounds=1) > 0
    assert conv_tflops(torch.float32, "cpu", batch=1, channels=4, side=8, rounds=1) > 0
    peaks = measure_peaks("cpu", (torch.float32,), sizes="tiny")
    assert list(peaks.by_dtype) == ["fp32"] and all(v > 0 for v in peaks.by_dtype["fp32"])
    assert "measured peak fp32" in peaks.lines()[0]


def test_the_share_is_of_the_measured_peak_of_the_same_precision():
    peaks = Peaks({"fp32": (1.0, 0.5), "bf16": (2.0, 4.0)}, "tiny")
    assert "25.0 % of the measured fp32 matmul peak" in peaks.share(0.25e12, torch.float32)
    assert "50.0 % of its conv2d" in peaks.share(0.25e12, torch.float32)
    assert "12.5 % of the measured bf16 matmul peak" in peaks.share(0.25e12, torch.bfloat16)


def test_the_machine_label_names_threads_and_capability():
    label = machine_label("cpu")
    assert f"{torch.get_num_threads()} threads" in label and "CPU capability" in label


def test_the_int8_peak_is_measured_and_an_int8_share_is_of_it():
    from bench.peak import int8_matmul_tops

    assert int8_matmul_tops(n=64, rounds=1) > 0
    peaks = Peaks({"fp32": (1.0, 0.5)}, "tiny", int8=4.0)
    assert "= 50.0 % of the measured int8 matmul peak (4.000)" in peaks.share_of(2e12, "int8")
    assert "= 100.0 % of the measured fp32 matmul peak" in peaks.share_of(1e12, "fp32")
    assert "no int8 peak measured" in Peaks({}, "tiny").share_of(1e12, "int8")
