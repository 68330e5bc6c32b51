"""The controller's side of the engine: runs in the flow process, holds no model, imports no torch."""
