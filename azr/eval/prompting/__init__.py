"""Evaluation prompts and the extraction of a prediction from a response."""
