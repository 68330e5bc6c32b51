"""Which directories hold the third-party packages programs may import (`sandbox.packages`).

The sandbox runs the base interpreter with -I -S, so a program sees only the standard library;
the packages listed here are found in these directories (and only they: see
worker.PackageFinder), which the sandbox shows read-only.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence


class PackageNotFound(ValueError):
    """A package listed in `sandbox.packages` is not installed here."""


def package_paths(names: Sequence[str]) -> list[str]:
    """The distinct directories (real paths) that hold the listed top-level packages."""
    paths: list[str] = []
    for name in names:
        if not name.isidentifier():
            raise PackageNotFound(f"sandbox.packages: {name!r} is not a top-level package name (e.g. numpy)")
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or (spec.origin in (None, "built-in", "frozen") and not spec.submodule_search_locations):
            raise PackageNotFound(
                f"sandbox.packages lists {name!r}, which is not installed in this environment: "
                f"install it, or remove it from sandbox.packages"
            )
        if spec.submodule_search_locations:
            location = os.path.dirname(os.path.realpath(list(spec.submodule_search_locations)[0]))
        else:
            location = os.path.dirname(os.path.realpath(spec.origin))
        if location not in paths:
            paths.append(location)
    return paths
