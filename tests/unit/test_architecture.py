"""Rules of the layout that the code must keep (docs/architecture.md): the library never
imports the orchestrator, the algorithm needs no torch, the controller's side of the engine
needs no torch, and the top level of `azr/` stays a handful of folders."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import azr

AZR = Path(azr.__file__).resolve().parent
ORCHESTRATION = ("prefect", "flows", "tasks")
HEAVY = ("torch", "transformers", "accelerate", "vllm", "deepspeed")


def _imported_roots(path: Path) -> set[str]:
    """Every top-level package a file imports, at module level or inside functions."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _offenders(files: list[Path], banned: tuple[str, ...]) -> dict[str, set[str]]:
    found = {str(f.relative_to(AZR.parent)): _imported_roots(f) & set(banned) for f in files}
    return {name: roots for name, roots in found.items() if roots}


def _modules_loaded_by(modules: list[str]) -> set[str]:
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_azr_never_imports_the_orchestrator() -> None:
    assert _offenders(sorted(AZR.rglob("*.py")), ORCHESTRATION) == {}
    modules = [m.name for m in pkgutil.walk_packages(azr.__path__, "azr.")]
    assert "azr.cli.main" in modules and "azr.selfplay.buffer" in modules
    assert not _modules_loaded_by(modules) & set(ORCHESTRATION)


def test_the_algorithm_imports_no_torch() -> None:
    files = sorted((AZR / "selfplay").rglob("*.py"))
    assert len(files) > 10
    assert _offenders(files, HEAVY) == {}
    modules = [m.name for m in pkgutil.walk_packages([str(AZR / "selfplay")], "azr.selfplay.")]
    assert not _modules_loaded_by(modules) & set(HEAVY)


def test_the_controller_side_of_the_engine_imports_no_torch() -> None:
    files = sorted((AZR / "engine" / "controller").rglob("*.py")) + [AZR / "engine" / "protocol.py", AZR / "engine" / "api.py"]
    assert _offenders(files, HEAVY) == {}
    controller = ["azr.engine.controller.client", "azr.engine.controller.launch", "azr.engine.api", "azr.engine.protocol"]
    assert not _modules_loaded_by(controller) & set(HEAVY)


def test_the_top_level_of_azr_stays_small() -> None:
    entries = [p for p in AZR.iterdir() if p.name != "__pycache__" and (p.suffix == ".py" or (p / "__init__.py").exists())]
    assert len(entries) <= 9, sorted(p.name for p in entries)  # __init__.py and at most 8 folders
    assert [p.name for p in entries if p.suffix == ".py"] == ["__init__.py"]
