"""Generation backends on the ranks: transformers, and vLLM colocated or on servers of its own."""
