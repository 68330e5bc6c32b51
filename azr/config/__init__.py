"""The run configuration: one pydantic model, YAML presets, overrides and the Prefect form's model."""
