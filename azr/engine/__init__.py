"""The model side of AZR: loading, generation backends, the TRR++ update, checkpoints.

Modules: `models` (load_model, tiny_model, dtypes), `conversion` (GGUF -> cached safetensors),
`tokenizer`, `generation` (SamplingSettings, Completion, GenerationBackend,
TransformersBackend), `update` (TrainSequence, TRRPPUpdate), `logprobs` (chunked head),
`checkpoints`, `policy` (the resident Policy and its accessor), `vllm_backend` (the vLLM
server and colocate modes), `vllm_server` (the `vllm serve` process), `vllm_common`,
`vllm_extension` (in-place weight loading inside vLLM). Nothing is imported here, so
`import azr.engine.model_source` stays free of torch.
"""
