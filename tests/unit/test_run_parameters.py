"""The training flow's parameters: a preset, changes to it (empty = the preset's value), a full
config only instead of a preset; and the schema the Prefect UI renders them from."""

from __future__ import annotations

import json
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from azr.config.loading import ConfigError, build_config, preset_names
from azr.config.run_form import ConfigChanges, Preset, changed_values, leaf_fields

LEAVES = leaf_fields()


def _schema() -> dict[str, Any]:
    from prefect.utilities.callables import parameter_schema

    from flows.training import train_flow

    return parameter_schema(train_flow.fn).model_dump()


def _resolve(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    refs = [p["$ref"] for p in [prop, *prop.get("anyOf", [])] if "$ref" in p]
    return schema["definitions"][refs[0].rsplit("/", 1)[1]] if refs else prop


def test_every_flow_parameter_has_a_title_and_a_description() -> None:
    schema = _schema()
    for name in ("preset", "changes", "overrides", "config", "iterations", "run_dir", "resume", "force"):
        prop = schema["properties"][name]
        assert prop["title"] != name, f"{name}: Prefect's default title (the name)"
        assert len(prop.get("description", "")) > 20, f"{name} has no description"
    assert schema["required"] == []


def test_preset_is_a_dropdown_of_every_preset_and_says_what_each_is() -> None:
    schema = _schema()
    preset = schema["properties"]["preset"]
    assert preset["default"] == "cpu"
    assert sorted(_resolve(schema, preset)["enum"]) == preset_names()
    for name in preset_names():
        assert f"`{name}`:" in preset["description"]


def test_changes_form_shows_every_setting_empty_titled_and_described() -> None:
    schema = _schema()
    changes = _resolve(schema, schema["properties"]["changes"])
    seen = 0

    def walk(definition: dict[str, Any], where: str) -> None:
        nonlocal seen
        for name, prop in definition["properties"].items():
            assert prop.get("title") and prop.get("description"), f"{where}{name}"
            section = _resolve(schema, prop)
            if section is not prop and section.get("type") == "object" and "properties" in section and name != "data":
                assert prop["default"] == {}, f"{where}{name}: a section of the changes starts empty"
                walk(section, f"{where}{name}.")
            else:  # a plain optional field with no default: a form leaves it out unless filled in
                assert "default" not in prop, f"{where}{name}: an unset change must be empty, not {prop['default']!r}"
                assert {"type": "null"} not in prop.get("anyOf", []), f"{where}{name}: shown as a value-or-None choice"
                assert "preset's value" in prop["description"]
                seen += 1
        assert not definition.get("required"), f"{where}: no change is required"

    walk(changes, "")
    assert seen == len(LEAVES)
    rollout = _resolve(schema, changes["properties"]["rollout"])
    assert rollout["properties"]["backend"]["enum"] == ["transformers", "vllm"]  # enums stay enums
    assert schema["properties"]["changes"]["default"] == {}


def _other_value(dotted: str, current: Any) -> Any:
    """A valid value different from `current` for the setting `dotted`."""
    field = LEAVES[dotted]
    annotation = field.annotation
    optional = typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType)
    kind = [a for a in typing.get_args(annotation) if a is not type(None)][0] if optional else annotation
    origin = typing.get_origin(kind)
    bounds = {type(m).__name__: m for m in field.metadata}
    if origin is typing.Literal:
        return next(v for v in typing.get_args(kind) if v != current)
    if kind is bool:
        return not current
    if kind is int:
        value = (current or 0) + 1
        return value if "Le" not in bounds or value <= bounds["Le"].le else (current or 0) - 1
    if kind is float:
        value = (current or 0.0) + 0.25
        limit = bounds.get("Le")
        return value if limit is None or value <= limit.le else (current or 1.0) / 2
    if kind is str:
        return f"{current or 'x'}-changed"
    if kind is Path:
        return "/data/other.jsonl"
    if origin is tuple:
        return [v / 2 for v in current]
    if origin is list:
        item = typing.get_args(kind)[0]
        if isinstance(item, type) and issubclass(item, Enum):
            return [v for v in current if v != "induction"] if len(current) > 1 else [*current, "abduction"]
        if isinstance(item, type) and issubclass(item, BaseModel):
            return [{"benchmark": "cruxeval-o", "source": "/data/crux.jsonl"}]
        return [*current[1:]] if current else ["cruxeval-o"]
    raise AssertionError(f"no alternative value for {dotted} ({annotation})")


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    head, *rest = dotted.split(".")
    return {head: _nest(".".join(rest), value) if rest else value}


@pytest.mark.parametrize("preset", preset_names())
def test_a_change_to_one_field_is_that_preset_with_that_field_changed(preset: str) -> None:
    from flows.training import resolve_run_config

    base = build_config(preset).flatten()
    refused: list[str] = []
    for dotted in LEAVES:
        new = _other_value(dotted, base[dotted])
        changes = ConfigChanges.model_validate(_nest(dotted, new))
        assert changed_values(changes) == _nest(dotted, new)
        try:
            got = resolve_run_config(Preset(preset), [], None, None, changes).flatten()
        except ConfigError:  # a cross-field rule (e.g. engine.num_machines > 1 needs a port)
            with pytest.raises(ConfigError):  # refused on the command line alike
                build_config(preset, overrides=[f"{dotted}={json.dumps(new)}"])
            refused.append(dotted)
            continue
        adapter = TypeAdapter(LEAVES[dotted].annotation)
        want = dict(base, **{dotted: adapter.dump_python(adapter.validate_python(new), mode="json")})
        assert got == want, f"{preset}: {dotted}"
        # the same as `-p preset -s key=value` on the command line
        assert build_config(preset, overrides=[f"{dotted}={json.dumps(new)}"]).flatten() == got
    assert len(refused) <= 3, f"{preset}: most single changes must be accepted; refused {refused}"


def test_empty_changes_are_the_preset_and_bad_changes_are_refused() -> None:
    from flows.training import resolve_run_config

    assert resolve_run_config(Preset.tiny, [], None, None, ConfigChanges()) == build_config("tiny")
    assert resolve_run_config(Preset.tiny, [], None, None, {"rollout": {}, "trainer": {}}) == build_config("tiny")
    with pytest.raises(ValidationError):
        ConfigChanges.model_validate({"rollout": {"batch_sise": 4}})
    with pytest.raises(ValidationError):
        ConfigChanges.model_validate({"rollout": {"batch_size": 0}})  # the setting's own bounds hold
    with pytest.raises(ConfigError, match="content_max_tokens"):
        resolve_run_config(Preset.tiny, [], None, None, {"rollout": {"content_max_tokens": 5000}})


def test_a_full_config_never_silently_replaces_the_preset(tmp_path: Path) -> None:
    from flows.training import resolve_run_config

    full = build_config("tiny", overrides=["rollout.batch_size=3"])
    with pytest.raises(ConfigError, match="both a preset"):
        resolve_run_config(Preset.cpu, [], full, None)
    assert resolve_run_config(None, [], full, None) == full
    changed = resolve_run_config(None, ["trainer.iterations=5"], full, None, {"rollout": {"mc_samples": 3}})
    assert (changed.trainer.iterations, changed.rollout.mc_samples, changed.rollout.batch_size) == (5, 3, 3)
    # resume: the run's own settings, the preset unused; changes apply to the stored config
    assert resolve_run_config(Preset.cpu, [], None, None, None, stored=full) is None
    resumed = resolve_run_config(Preset.cpu, [], None, 7, {"rollout": {"mc_samples": 3}}, stored=full)
    assert (resumed.name, resumed.trainer.iterations, resumed.rollout.mc_samples) == ("tiny", 7, 3)
