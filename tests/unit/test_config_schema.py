"""The config's JSON schema is what the Prefect UI renders: it must explain and prefill every field."""

from __future__ import annotations

import typing
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from azr.config.schema import AZRConfig


def _sections(model: type[BaseModel] = AZRConfig, prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    yield prefix or "(top level)", model
    for name, field in model.model_fields.items():
        for inner in typing.get_args(field.annotation) or (field.annotation,):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                yield from _sections(inner, f"{prefix}{name}.")


SECTIONS = dict(_sections())


@pytest.mark.parametrize("where", sorted(SECTIONS))
def test_every_field_has_its_own_title_and_a_description(where: str) -> None:
    model = SECTIONS[where]
    assert (model.__doc__ or "").strip(), f"section {where} has no docstring (its description in the UI)"
    for name, field in model.model_fields.items():
        assert field.title, f"{where}{name} has no title= (the UI would show an auto-generated one)"
        assert field.description and len(field.description) > 10, f"{where}{name} has no description="
        assert "\n" not in field.title


def _properties(schema: dict) -> Iterator[tuple[str, dict]]:
    for owner in [schema, *schema["$defs"].values()]:
        for name, prop in owner.get("properties", {}).items():
            yield f"{owner.get('title')}.{name}", prop


def test_the_schema_carries_defaults_enums_titles_and_descriptions() -> None:
    schema = AZRConfig.model_json_schema()
    for where, prop in _properties(schema):
        target = schema["$defs"][prop["$ref"].rsplit("/", 1)[1]] if "$ref" in prop else {}
        # pydantic drops a section field's description where it repeats the section's own
        assert prop.get("title") and (prop.get("description") or target.get("description")), where
        if where.split(".")[0] != "BenchmarkData":  # its two fields are required in each row
            assert "default" in prop, f"{where} shows empty in a form: no default in the schema"
    rollout = schema["$defs"]["RolloutConfig"]["properties"]
    assert rollout["backend"]["enum"] == ["transformers", "vllm"]
    tasks = schema["$defs"]["TaskConfig"]["properties"]
    assert tasks["types"]["default"] == ["abduction", "deduction", "induction"]
    assert schema["$defs"]["TaskType"]["enum"] == ["deduction", "abduction", "induction"]
    assert len(tasks["banned_imports"]["default"]) == 17
    assert schema["properties"]["trainer"]["default"]["iterations"] == 500


def test_eval_data_is_a_list_of_rows_and_accepts_a_mapping() -> None:
    schema = AZRConfig.model_json_schema()
    data = schema["$defs"]["EvalConfig"]["properties"]["data"]
    assert data["type"] == "array" and data["items"] == {"$ref": "#/$defs/BenchmarkData"}
    config = AZRConfig.model_validate({"eval": {"data": {"cruxeval-o": "x.jsonl"}}})
    assert config.eval.data_source("cruxeval-o") == "x.jsonl" and config.eval.data_source("cruxeval-i") is None
    again = AZRConfig.model_validate(config.model_dump(mode="json"))
    assert again == config
    with pytest.raises(ValueError, match="more than once"):
        AZRConfig.model_validate({"eval": {"data": [{"benchmark": "a", "source": "x"}, {"benchmark": "a", "source": "y"}]}})
