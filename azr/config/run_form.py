"""The training flow's parameters as typed models: a preset to start from, and changes to it.

`ConfigChanges` mirrors `AZRConfig` field for field, with every value optional and empty by
default: an empty field means "the preset's value". It is what `-p PRESET -s key=value` is on
the command line, as a form (the Prefect UI renders its JSON schema).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, create_model

from azr.config.schema import AZRConfig
from azr.config.loading import preset_description, preset_names

EMPTY_MEANS_PRESET = "Empty: the preset's value."

Preset = StrEnum("Preset", {name: name for name in preset_names()})  # type: ignore[misc]
Preset.__doc__ = "A preset in azr/config/presets/ (`azr config presets`)."


def preset_help() -> str:
    """One line per preset, for the `preset` parameter's description."""
    return "; ".join(f"`{name}`: {preset_description(name)}" for name in preset_names())


def _as_choice(value: Any) -> Any:
    return {True: "true", False: "false"}.get(value, value) if isinstance(value, bool) else value


# A yes/no change as a choice that starts empty: a form renders a plain boolean as a toggle and
# submits its "off" position (false) even when untouched, which would silently change the preset.
YesNo = Annotated[
    Literal["true", "false"], BeforeValidator(_as_choice), PlainSerializer(lambda value: value == "true", return_type=bool)
]


def _empty_unless_set(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """Every change shows as a plain, empty, optional field (not a "value or None" choice).

    A section's default is {}; a setting has no default and is not required, so a form leaves it
    out unless the user fills it in. Validation still takes a missing setting as None.
    """
    for name, prop in schema.get("properties", {}).items():
        field = cls.model_fields[name]
        if field.default_factory is not None:
            prop["default"] = {}
            continue
        prop.pop("default", None)
        options = [option for option in prop.pop("anyOf", []) if option.get("type") != "null"]
        if len(options) == 1:
            prop.update(options[0])
        elif options:
            prop["anyOf"] = options
    schema.pop("required", None)


class _Changes(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_empty_unless_set)


def _section_model(section: type[BaseModel]) -> type[BaseModel]:
    return section if isinstance(section, type) and issubclass(section, BaseModel) else None  # type: ignore[return-value]


def _changes_model(model: type[BaseModel], name: str) -> type[_Changes]:
    fields: dict[str, Any] = {}
    for key, field in model.model_fields.items():
        section = _section_model(field.annotation)  # type: ignore[arg-type]
        if section is not None:
            inner = _changes_model(section, f"{section.__name__.removesuffix('Config')}Changes")
            fields[key] = (inner, Field(default_factory=inner, title=field.title, description=section.__doc__))
            continue
        annotation = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
        if field.annotation is bool:
            annotation = YesNo
        fields[key] = (
            annotation | None,
            Field(None, title=field.title, description=f"{field.description} {EMPTY_MEANS_PRESET}"),
        )
    doc = f"Changes to the preset's `{name.removesuffix('Changes').lower()}` settings; {EMPTY_MEANS_PRESET.lower()}"
    return create_model(name, __base__=_Changes, __doc__=doc, **fields)  # type: ignore[call-overload]


ConfigChanges = _changes_model(AZRConfig, "ConfigChanges")
ConfigChanges.__doc__ = (
    "Changes to the preset, section by section, as `-s section.key=value` on the command line. "
    + EMPTY_MEANS_PRESET
)


def changed_values(changes: BaseModel | dict[str, Any] | None) -> dict[str, Any]:
    """The fields a user set, as a nested mapping (empty sections dropped)."""
    if changes is None:
        return {}
    if not isinstance(changes, BaseModel):
        changes = ConfigChanges.model_validate(changes)
    return _prune(changes.model_dump(mode="json", exclude_none=True))


def _prune(data: dict[str, Any]) -> dict[str, Any]:
    pruned = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = _prune(value)
            if not value:
                continue
        pruned[key] = value
    return pruned


def leaf_fields(model: type[BaseModel] = AZRConfig, prefix: str = "") -> dict[str, Any]:
    """Dotted name -> FieldInfo of every setting (not section) of `model`."""
    leaves: dict[str, Any] = {}
    for key, field in model.model_fields.items():
        section = _section_model(field.annotation)  # type: ignore[arg-type]
        if section is not None:
            leaves.update(leaf_fields(section, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = field
    return leaves

