"""Run configuration: presets, files, overrides and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from azr.config.schema import ORIGINAL_BANNED_IMPORTS, AZRConfig
from azr.config.loading import ConfigError, build_config, config_to_yaml, preset_description, preset_names
from azr.selfplay.task_types import TaskType

PAPER_PRESETS = {
    "qwen2.5-coder-3b": ("Qwen/Qwen2.5-Coder-3B", 2, 2),
    "qwen2.5-coder-7b": ("Qwen/Qwen2.5-Coder-7B", 4, 2),
    "qwen2.5-coder-14b": ("Qwen/Qwen2.5-Coder-14B", 8, 4),
    "qwen2.5-7b": ("Qwen/Qwen2.5-7B", 4, 2),
    "qwen2.5-14b": ("Qwen/Qwen2.5-14B", 8, 4),
    "llama-3.1-8b": ("meta-llama/Llama-3.1-8B", 4, 2),
}


def test_defaults_are_the_paper_recipe() -> None:
    config = AZRConfig()
    assert config.rollout.batch_size == 64 and config.rollout.mc_samples == 8
    assert config.rollout.temperature == 1.0 and config.rollout.mc_temperature == 1.0
    assert config.tasks.references == 6 and config.tasks.induction_inputs == 10
    assert config.tasks.banned_imports == list(ORIGINAL_BANNED_IMPORTS) and len(ORIGINAL_BANNED_IMPORTS) == 17
    assert config.trainer.learning_rate == 1e-6 and config.trainer.weight_decay == 0.01
    assert config.trainer.entropy_coef == 0.001 and config.trainer.kl_coef == 0.0
    assert config.trainer.max_grad_norm == 1.0 and config.trainer.iterations == 500
    assert config.buffer.max_size == 16384 and config.buffer.cap_policy == "keep_oldest"
    assert config.reward.learnability_zero == "code"
    assert config.rollout.content_max_tokens == 5600 < config.rollout.max_prompt_tokens == 6144


def test_every_preset_loads_and_describes_itself() -> None:
    names = preset_names()
    assert {"cpu", "tiny", *PAPER_PRESETS} <= set(names)
    for name in names:
        config = build_config(name)
        assert config.name == name
        assert preset_description(name)


@pytest.mark.parametrize("name", sorted(PAPER_PRESETS))
def test_paper_recipes(name: str) -> None:
    model, gpus, tensor_parallel = PAPER_PRESETS[name]
    config = build_config(name)
    assert config.model.name_or_path == model and config.model.prompt_wrapper == "r1"
    assert config.trainer.gpus == gpus and config.rollout.tensor_parallel_size == tensor_parallel
    assert config.rollout.batch_size == 64 and config.trainer.learning_rate == 1e-6
    llama = name.startswith("llama")
    assert config.tasks.reject_multiple_functions is not llama
    assert config.tasks.rename_function == ("any_last" if llama else "not_first")
    assert config.buffer.seed_limit == (64 if llama else 256)


def test_cpu_preset_is_small_and_uses_the_bundled_model() -> None:
    config = build_config("cpu")
    assert config.model.name_or_path == "bundled:smollm2-135m-instruct"
    assert config.model.prompt_wrapper == "chat"
    assert config.rollout.batch_size <= 8 and config.rollout.max_new_tokens <= 512


def test_overrides_parse_yaml_values() -> None:
    config = build_config(
        "tiny",
        overrides=[
            "rollout.batch_size=3",
            "reward.learnability_zero=paper",
            "tasks.types=[deduction, induction]",
            "trainer.learning_rate=2e-6",
            "tracking.experiment=",
        ],
    )
    assert config.rollout.batch_size == 3
    assert config.reward.learnability_zero == "paper"
    assert config.tasks.types == [TaskType.DEDUCTION, TaskType.INDUCTION]
    assert config.trainer.learning_rate == 2e-6
    assert config.tracking.experiment is None


def test_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("rollout:\n  batch_size: 5\n  mc_samples: 3\nseed: 7\n")
    config = build_config("tiny", config_file=path, overrides=["rollout.mc_samples=4"])
    assert (config.rollout.batch_size, config.rollout.mc_samples, config.seed) == (5, 4, 7)
    assert config.rollout.max_new_tokens == 16  # the rest of the preset is kept


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.batchsize=3"], "did you mean 'rollout.batch_size'"),
        (["rolout.batch_size=3"], "did you mean 'rollout'"),
        (["rollout.batch_size.x=3"], "is a value, not a section"),
        (["rollout.batch_size"], "key=value"),
        (["rollout.batch_size=lots"], "rollout.batch_size"),
        (["rollout.batch_size=0"], "greater than or equal to 1"),
        (["reward.learnability_zero=maybe"], "'code' or 'paper'"),
        (["rollout.content_max_tokens=9000"], "content_max_tokens must not exceed"),
        (["tasks.types=[induction]"], "add deduction or abduction"),
        (["rollout.temperature=[1"], "bad value"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build_config("tiny", overrides=overrides)


def test_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown preset 'cpuu' \\(did you mean 'cpu'\\?\\)"):
        build_config("cpuu")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        build_config("tiny", config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config("tiny", config_file=bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        build_config("tiny", config_file=listing)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("rollout:\n  speed: 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'rollout.speed'"):
        build_config("tiny", config_file=unknown)


def test_yaml_round_trip_and_flatten(tmp_path: Path) -> None:
    config = build_config("cpu", overrides=["seed=3"])
    path = tmp_path / "dump.yaml"
    path.write_text(config_to_yaml(config))
    assert build_config(None, config_file=path) == config
    flat = config.flatten()
    assert flat["rollout.batch_size"] == config.rollout.batch_size
    assert flat["seed"] == 3 and "tasks.banned_imports" in flat
