"""`model.dtype: auto` on CPUs: bf16 only with native bf16 flags and no ISA cap hiding them."""

from __future__ import annotations

from pathlib import Path

import pytest

from azr.config.loading import build_config
from azr.ops import cpu_features
from azr.ops.cpu_features import choose_cpu_dtype, dtype_report, isa_cap_allows_bf16, read_cpu_flags, resolved_dtype
from azr.ops.disk_use import _bytes_per_parameter
from azr.ops.memory_plan import compute_bytes

AVX2_ONLY = "fpu sse sse2 avx avx2 fma bmi2".split()  # an AMD EPYC Zen 3
AVX512_NO_BF16 = [*AVX2_ONLY, "avx512f", "avx512bw", "avx512_vnni"]  # Skylake/Cascade Lake
SAPPHIRE_RAPIDS = [*AVX512_NO_BF16, "avx512_bf16", "amx_bf16", "amx_tile"]
ZEN4 = [*AVX512_NO_BF16, "avx512_bf16"]


@pytest.mark.parametrize(("flags", "dtype"), [
    (AVX2_ONLY, "float32"), (AVX512_NO_BF16, "float32"), (SAPPHIRE_RAPIDS, "bfloat16"), (ZEN4, "bfloat16"),
    (["amx_bf16", "avx2"], "bfloat16"),
])
def test_bf16_only_with_native_bf16_flags(flags: list[str], dtype: str) -> None:
    choice = choose_cpu_dtype(flags, env={}, machine="x86_64")
    assert choice.dtype == dtype
    assert ("AVX2" in choice.features) == ("avx2" in flags)
    assert ("emulated" in choice.reason) == (dtype == "float32")


@pytest.mark.parametrize(("cap", "allowed"), [
    (None, True), ("", True), ("AVX2", False), ("avx2", False), ("AVX512_CORE", False), ("AVX512_CORE_VNNI", False),
    ("AVX2_VNNI_2", False), ("SSE41", False), ("AVX512_CORE_BF16", True), ("AVX512_CORE_AMX", True),
    ("AVX10_1_512_AMX", True), ("ALL", True),
])
def test_onednn_isa_cap(cap: str | None, allowed: bool) -> None:
    assert isa_cap_allows_bf16(cap) is allowed
    env = {} if cap is None else {"ONEDNN_MAX_CPU_ISA": cap}
    choice = choose_cpu_dtype(SAPPHIRE_RAPIDS, env=env, machine="x86_64")
    assert choice.dtype == ("bfloat16" if allowed else "float32")
    if not allowed:
        assert f"ONEDNN_MAX_CPU_ISA={cap}" in choice.reason


def test_unreadable_flags_and_other_architectures_get_fp32() -> None:
    assert choose_cpu_dtype(None, env={}, machine="x86_64").dtype == "float32"
    assert choose_cpu_dtype(["bf16", "sve"], env={}, machine="aarch64").dtype == "float32"


def test_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu avx2 fma\n")
    assert read_cpu_flags(info) == frozenset({"fpu", "avx2", "fma"})
    assert read_cpu_flags(tmp_path / "missing") is None
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert read_cpu_flags(tmp_path / "empty") is None


@pytest.fixture
def avx2_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_features, "read_cpu_flags", lambda path=None: frozenset(AVX2_ONLY))
    monkeypatch.setattr(cpu_features.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)


@pytest.fixture
def amx_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_features, "read_cpu_flags", lambda path=None: frozenset(SAPPHIRE_RAPIDS))
    monkeypatch.setattr(cpu_features.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)


def test_cpu_preset_is_fp32_on_avx2_and_bf16_with_amx(avx2_machine: None, monkeypatch: pytest.MonkeyPatch) -> None:
    config = build_config("cpu")
    assert config.model.dtype == "auto"  # never pinned: bf16 is ~50x slower where it is emulated
    assert build_config("tiny").model.dtype == "float32"  # exact on every CPU: the tests compare stage files bit for bit
    assert resolved_dtype("auto", on_gpu=False) == "float32"
    assert compute_bytes(config, "cpu") == 4 and _bytes_per_parameter(config) == (4, 4)
    line, warning = dtype_report("auto", on_gpu=False)
    assert "AVX2" in line and "auto -> float32" in line and warning is None
    monkeypatch.setattr(cpu_features, "read_cpu_flags", lambda path=None: frozenset(SAPPHIRE_RAPIDS))
    assert compute_bytes(config, "cpu") == 2 and _bytes_per_parameter(config) == (2, 4)
    assert "auto -> bfloat16" in dtype_report("auto", on_gpu=False)[0]


def test_pinned_bf16_on_avx2_is_warned_about(avx2_machine: None) -> None:
    line, warning = dtype_report("bfloat16", on_gpu=False)
    assert "set explicitly" in line and warning is not None and "model.dtype=auto" in warning
    assert dtype_report("float32", on_gpu=False)[1] is None


def test_gpu_runs_keep_the_cuda_rule(avx2_machine: None) -> None:
    assert resolved_dtype("auto", on_gpu=True) == "bfloat16"
    assert "GPU" in dtype_report("auto", on_gpu=True)[0]


def test_engine_dtype_follows_the_flags(avx2_machine: None) -> None:
    import torch

    from azr.config.schema import ModelConfig
    from azr.engine.models.loading import compute_dtype

    assert compute_dtype(ModelConfig(dtype="auto"), "cpu") == torch.float32
    assert compute_dtype(ModelConfig(dtype="float32"), "cpu") == torch.float32


def test_engine_needs_torch_to_agree(amx_machine: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from azr.config.schema import ModelConfig
    from azr.engine.models import loading

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert loading.compute_dtype(ModelConfig(dtype="auto"), "cpu") == torch.float32
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert loading.compute_dtype(ModelConfig(dtype="auto"), "cpu") == torch.bfloat16
