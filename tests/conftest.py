"""Shared fixtures (a per-session model cache, Accelerate's state) and the tier markers: every
test is marked by its folder (unit, integration, e2e), so `-m unit` selects the fast tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def azr_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh AZR_CACHE_DIR for the session: the bundled model is converted once into it."""
    from azr.engine.models.gguf import CACHE_ENV

    path = tmp_path_factory.mktemp("azr-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(path))
        yield path


@pytest.fixture(scope="session")
def bundled_copy(azr_cache: Path) -> Path:
    """The converted bundled model (the first use converts it, ~25 s on 2 cores)."""
    from azr.config.schema import BUNDLED_MODEL_ID
    from azr.engine.models.gguf import ensure_converted
    from azr.engine.models.sources import resolve_model_source

    return ensure_converted(resolve_model_source(BUNDLED_MODEL_ID))


@pytest.fixture(scope="session")
def tokenizer(bundled_copy: Path) -> Any:
    """The bundled tokenizer, read from the converted copy."""
    from azr.config.schema import ModelConfig
    from azr.engine.models.tokenizer import load_tokenizer

    return load_tokenizer(ModelConfig(name_or_path="tiny-random"))


@pytest.fixture
def fresh_accelerate() -> Iterator[None]:
    """Accelerate keeps one process-wide state (its mixed precision is fixed by the first
    Accelerator); each test starts from none, as a new run process would."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, taken from the folder it lives in."""
    for item in items:
        tier = next((part for part in item.path.parts if part in TIERS), None)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
