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

from azr.config.schema import AZRConfig, flatten_dict

DEFAULT_PRESET = "cpu"
PRESET_PACKAGE = "azr.config.presets"


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


def chosen_preset(preset: str | None, config_file: Path | None = None) -> str | None:
    """The preset a command runs: the one named, else the default unless a config file stands
    in for it. An empty name is refused: it would silently train the default preset."""
    if preset is None:
        return None if config_file else DEFAULT_PRESET
    if not preset.strip():
        raise ConfigError(
            f"--preset is empty; name one of: {', '.join(preset_names())} "
            f"(or leave --preset out for {DEFAULT_PRESET!r})"
        )
    return preset


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last silently, so a forgotten earlier line would quietly lose)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
                seen.setdefault(key, line)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} on line {line} (first given on line {first}); keep one of them"
                )
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """YAML as `yaml.safe_load` reads it, but a key given twice is an error."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("it is nested too deeply to read (lists or mappings inside each other thousands of levels deep)") from None


def undecodable(exc: UnicodeDecodeError) -> str:
    """'byte 0xff on line 3' for a file that is not UTF-8."""
    data = exc.object if isinstance(exc.object, bytes) else bytes(exc.object)
    line = data[: exc.start].count(b"\n") + 1
    return f"byte {data[exc.start]:#04x} on line {line} is not UTF-8"


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file, or a ConfigError that names it and the byte that is not UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text ({undecodable(exc)}); save it as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def _parse_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    try:
        data = load_yaml(text)
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
    return _parse_yaml_mapping(read_text_file(path, "config file"), f"config file {path}")


def parse_override(item: str) -> tuple[list[str], Any]:
    """`rollout.batch_size=8` -> (['rollout', 'batch_size'], 8); values are parsed as YAML."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"bad override {item!r}: write it as key=value, e.g. rollout.batch_size=8"
        )
    try:
        value = load_yaml(raw) if raw.strip() else None
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
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{location}: {message}{shown}")
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
        if preset is not None and not preset.strip():
            chosen_preset(preset)  # raises: an empty name
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
