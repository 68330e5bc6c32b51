"""vLLM rollouts: colocated inside the ranks (hybrid), or dedicated `vllm serve` processes."""
