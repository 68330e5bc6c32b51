"""Building an `AZRConfig` from a preset, a YAML file and `key=value` overrides.

Order of precedence (later wins): model defaults < preset < config file < overrides.
Every problem is raised as `ConfigError` with a message that says what was wrong and how to
fix it, so the CLI can print it as one paragraph.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any
from collections.abc import Iterable

import yaml
from pydantic import BaseModel, ValidationError

from azr.config import AZRConfig, flatten_dict

DEFAULT_PRESET = "cpu"
PRESET_PACKAGE = "azr.presets"


class ConfigError(ValueError):
    """A configuration the user gave cannot be used; the message says what to change."""


def preset_names() -> list[str]:
    files = resources.files(PRESET_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def preset_description(name: str) -> str:
    """The first comment line of the preset file: a one-line summary for listings."""
    for line in _preset_text(name).splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def _preset_text(name: str) -> str:
    path = resources.files(PRESET_PACKAGE) / f"{name}.yaml"
    if not path.is_file():
        hint = _did_you_mean(name, preset_names())
        raise ConfigError(
            f"unknown preset {name!r}{hint}. Available presets: {', '.join(preset_names())}."
        )
    return path.read_text(encoding="utf-8")


def _parse_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a YAML mapping of sections, got {type(data).__name__}")
    return data


def load_preset(name: str) -> dict[str, Any]:
    data = _parse_yaml_mapping(_preset_text(name), f"preset {name!r}")
    data.setdefault("name", name)
    return data


def load_config_file(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    return _parse_yaml_mapping(text, f"config file {path}")


def parse_override(item: str) -> tuple[list[str], Any]:
    """`rollout.batch_size=8` -> (['rollout', 'batch_size'], 8); values are parsed as YAML."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"bad override {item!r}: write it as key=value, e.g. rollout.batch_size=8"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"bad value in override {item!r}: {exc}") from exc
    return key.split("."), value


def _check_path(path: list[str], model: type[BaseModel] = AZRConfig) -> None:
    """Refuse a dotted key that names no setting, suggesting the closest one."""
    current: type[BaseModel] | None = model
    for depth, part in enumerate(path):
        if current is None:
            raise ConfigError(f"unknown setting {'.'.join(path)!r}: {'.'.join(path[:depth])!r} "
                              "is a value, not a section")
        fields = current.model_fields
        if part not in fields:
            prefix = ".".join(path[:depth])
            candidates = [f"{prefix}.{f}" if prefix else f for f in fields]
            hint = _did_you_mean(".".join(path[: depth + 1]), candidates)
            where = f"section {prefix!r}" if prefix else "the top level"
            raise ConfigError(
                f"unknown setting {'.'.join(path)!r}{hint}. Settings of {where}: "
                f"{', '.join(sorted(fields))}."
            )
        annotation = fields[part].annotation
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _format_validation_error(exc: ValidationError, source: str) -> str:
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown setting {location!r}")
        else:
            given = error.get("input")
            shown = f" (got {given!r})" if not isinstance(given, (dict, list)) else ""
            problems.append(f"{location}: {error['msg']}{shown}")
    return f"invalid configuration from {source}: " + "; ".join(problems) + (
        ". Run `azr config show` to see every setting with its current value."
    )


def build_config(
    preset: str | None = DEFAULT_PRESET,
    config_file: Path | None = None,
    overrides: Iterable[str] = (),
    base: AZRConfig | None = None,
    changes: dict[str, Any] | None = None,
) -> AZRConfig:
    """Resolve a run configuration; raises ConfigError naming what to fix.

    `base` (a whole config) takes the place of the preset when given. `changes` (a nested
    mapping of set fields, as the flow's `changes` form gives) apply after the file and before
    the overrides.
    """
    if base is not None:
        data: dict[str, Any] = base.model_dump(mode="json")
        sources = ["the given config"]
    else:
        data = load_preset(preset) if preset else {}
        sources = [f"preset {preset!r}"] if preset else []
    if config_file is not None:
        data = _deep_merge(data, load_config_file(config_file))
        sources.append(f"file {str(config_file)!r}")
    if changes:
        data = _deep_merge(data, changes)
        sources.append("changes " + ", ".join(f"{k}={v!r}" for k, v in flatten_dict(changes).items()))
    for item in overrides:
        path, value = parse_override(item)
        _check_path(path)
        _set_path(data, path, value)
        sources.append(f"--set {item}")
    try:
        return AZRConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, ", ".join(sources) or "defaults")) from exc


def config_to_yaml(config: AZRConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
