"""Which compute dtype `model.dtype: auto` means on this CPU, and why, without importing torch.

bf16 is fast on a CPU only with native kernels: AVX512-BF16 or AMX. Without them oneDNN emulates
bf16 and a matmul runs ~50-400x slower than in fp32 (measured: 1.1 GFLOP/s bf16 against 57-90
fp32 per thread on AVX2, both on an AMD EPYC and on this project's Xeon capped with
`ONEDNN_MAX_CPU_ISA=AVX2`). So `auto` picks bf16 only when the flags in /proc/cpuinfo show native
bf16 *and* `ONEDNN_MAX_CPU_ISA`, if set, does not cap oneDNN below those instructions.
The decision is made from the flags alone so that `azr plan` can print it before anything loads;
the engine adds torch's own check (`torch.ops.mkldnn._is_mkldnn_bf16_supported`).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"

# The /proc/cpuinfo flags that give native bf16 matmuls, with the names printed for them.
NATIVE_BF16_FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16"}
# Flags worth naming in the report (the ISA levels oneDNN and torch pick kernels by).
REPORTED_FLAGS = {"avx2": "AVX2", "avx512f": "AVX512F", **NATIVE_BF16_FLAGS, "amx_tile": "AMX"}
# ONEDNN_MAX_CPU_ISA values (upper case) that still allow oneDNN's native bf16 kernels; every
# other value (SSE41, AVX, AVX2, AVX2_VNNI(_2), AVX512_CORE, AVX512_CORE_VNNI, ...) caps below them.
_BF16_ISA_CAPS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10_", "ALL", "DEFAULT")


@dataclass(frozen=True)
class DtypeChoice:
    """What `auto` resolves to on the CPU, the features seen, and one line of why."""

    dtype: str  # "bfloat16" or "float32"
    features: tuple[str, ...]  # printable names of the reported flags that were found
    reason: str

    def describe(self, configured: str = "auto") -> str:
        found = ", ".join(self.features) or "none of AVX2/AVX512/AVX512-BF16/AMX"
        if configured != "auto":
            return f"CPU features: {found}; model.dtype {configured} (set explicitly); auto would pick {self.dtype}"
        return f"CPU features: {found}; model.dtype auto -> {self.dtype} ({self.reason})"


def read_cpu_flags(path: Path = CPUINFO) -> frozenset[str] | None:
    """The `flags` of the first processor in /proc/cpuinfo; None where there is no such file
    (macOS, Windows) or it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86; aarch64 names them Features
            return frozenset(value.split())
    return None


def isa_cap_allows_bf16(cap: str | None) -> bool:
    """Whether `ONEDNN_MAX_CPU_ISA=cap` leaves oneDNN its native bf16 kernels (unset: yes)."""
    if cap is None or not cap.strip():
        return True
    cap = cap.strip().upper()
    return any(cap.startswith(prefix) for prefix in _BF16_ISA_CAPS)


def choose_cpu_dtype(flags: Iterable[str] | None, env: Mapping[str, str] | None = None,
                     machine: str | None = None) -> DtypeChoice:
    """bf16 where the CPU flags show native bf16 and no ISA cap hides it, else fp32."""
    env = os.environ if env is None else env
    machine = (machine or platform.machine()).lower()
    if flags is None:
        return DtypeChoice("float32", (), "CPU flags unreadable (no /proc/cpuinfo): fp32 is the safe choice")
    flags = frozenset(flags)
    features = tuple(name for flag, name in REPORTED_FLAGS.items() if flag in flags)
    if machine not in ("x86_64", "amd64", "i686", "i386"):
        return DtypeChoice("float32", features, f"{machine} CPU: no native bf16 matmul kernels known to oneDNN here")
    native = [name for flag, name in NATIVE_BF16_FLAGS.items() if flag in flags]
    if not native:
        return DtypeChoice("float32", features, "no AVX512-BF16 or AMX: bf16 would be emulated, ~50x slower than fp32")
    cap = env.get(ISA_VARIABLE)
    if not isa_cap_allows_bf16(cap):
        return DtypeChoice("float32", features,
                           f"{ISA_VARIABLE}={cap} caps oneDNN below its bf16 kernels: bf16 would be emulated")
    return DtypeChoice("bfloat16", features, f"native bf16: {' and '.join(native)}")


def cpu_dtype_choice() -> DtypeChoice:
    """The choice for this machine and environment."""
    return choose_cpu_dtype(read_cpu_flags())


def resolved_dtype(configured: str, on_gpu: bool) -> str:
    """The compute dtype name a run of `model.dtype: configured` gets: GPUs keep the engine's
    rule (bf16 where CUDA supports it, assumed here), CPUs follow `cpu_dtype_choice`."""
    if configured != "auto":
        return configured
    return "bfloat16" if on_gpu else cpu_dtype_choice().dtype


def dtype_report(configured: str, on_gpu: bool) -> tuple[str, str | None]:
    """(the line `azr plan` and `azr train` print, a warning or None): a CPU run names the
    features found, the dtype and why; a bf16 pinned on a CPU without native bf16 is warned about."""
    if on_gpu:
        if configured == "auto":
            return "model.dtype auto -> bfloat16 on GPUs that support it, else float32 (decided on the GPU)", None
        return f"model.dtype {configured} (set explicitly)", None
    choice = cpu_dtype_choice()
    warning = None
    if configured == "bfloat16" and choice.dtype == "float32":
        warning = (f"model.dtype bfloat16 on a CPU without native bf16 ({choice.reason}); "
                   "set model.dtype=auto (fp32 here) unless you mean to measure the emulation")
    return choice.describe(configured), warning
