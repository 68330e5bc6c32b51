"""rollout.async_level: the refusal of colocated layouts, and the one-step-off order of the stages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from azr.config.schema import AZRConfig
from azr.pipeline.registry import UPDATE, overlap_phases, stages_for
from azr.pipeline.stages import rollout_version


def _config(**rollout: object) -> AZRConfig:
    return AZRConfig.model_validate({"rollout": rollout})


def test_sync_is_the_default() -> None:
    assert AZRConfig().rollout.async_level == 0


@pytest.mark.parametrize("rollout", [
    {"async_level": 1},
    {"async_level": 1, "backend": "vllm", "vllm": {"mode": "colocate"}},
    {"async_level": 1, "backend": "vllm", "vllm": {"mode": "auto"}},
])
def test_colocated_layouts_are_refused_with_what_to_set(rollout: dict) -> None:
    with pytest.raises(ValidationError, match=r"rollout.async_level=1 .* rollout.vllm.mode=server"):
        _config(**rollout)


@pytest.mark.parametrize("rollout", [
    {"async_level": 1, "backend": "vllm", "vllm": {"mode": "server"}},
    {"async_level": 1, "backend": "vllm", "vllm": {"mode": "auto"}, "gpus": 1},
    {"async_level": 1, "backend": "vllm", "vllm": {"mode": "auto", "url": "http://127.0.0.1:8000"}},
])
def test_dedicated_servers_are_accepted(rollout: dict) -> None:
    assert _config(**rollout).rollout.async_level == 1


def test_only_levels_0_and_1() -> None:
    with pytest.raises(ValidationError):
        _config(async_level=2, backend="vllm", vllm={"mode": "server"})


@pytest.mark.parametrize("merge_calls", [True, False])
def test_one_step_off_order_commits_before_any_update(merge_calls: bool) -> None:
    before, generation, after = overlap_phases(merge_calls)
    names = [stage.name for stage in before + generation + after]
    assert [s.name for s in before] == ["build_prompts"]
    assert {s.name for s in generation} == ({"generate_propose_solve"} if merge_calls else {"propose", "solve"})
    assert names[-1] == "commit" and UPDATE not in before + generation + after
    # every other stage of the layout, each once
    assert sorted(names) == sorted(s.name for s in stages_for(merge_calls) if s is not UPDATE)


def test_one_step_off_rows_are_one_version_older() -> None:
    assert [rollout_version(step) for step in (1, 2, 3)] == [0, 1, 2]
    assert [rollout_version(step, 1) for step in (1, 2, 3)] == [0, 0, 1]
