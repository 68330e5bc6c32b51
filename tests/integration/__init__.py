"""Integration tier: real processes (sandbox workers, engine ranks, vLLM servers, gloo groups)."""
