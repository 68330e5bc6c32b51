"""Rules of the layout that the code must keep (DESIGN.md)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import azr


def test_azr_never_imports_prefect() -> None:
    modules = [m.name for m in pkgutil.walk_packages(azr.__path__, "azr.")]
    assert "azr.cli" in modules and "azr.buffer" in modules
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
