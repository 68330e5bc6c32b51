"""The model side of AZR: loading, generation backends, the TRR++ update, checkpoints.

Modules: `models` (load_model, tiny_model, dtypes), `conversion` (GGUF -> cached safetensors),
`tokenizer`, `generation` (SamplingSettings, Completion, GenerationBackend,
TransformersBackend), `update` (TrainSequence, TRRPPUpdate), `logprobs` (chunked head),
`checkpoints`, `policy` (the Policy every engine rank holds), `sequences` (the update's batch
from scored.parquet), `service` (the engine's rank loop, run by `accelerate launch`), `launch`
(that command), `client` (the controller's EngineClient: the Policy interface, no model),
`protocol` (JSON messages and exchange files between them), `vllm_backend` (what the vLLM
modes share), `vllm_hybrid` (colocate mode: vLLM inside every engine rank), `vllm_dedicated`
(server mode on any rank count: dedicated, data-parallel servers), `weight_transfer` (the
trainer's side of vLLM's weight-transfer API: NCCL, gloo), `vllm_server` (the `vllm serve`
process), `vllm_version` (the supported vLLM range, checked at start), `vllm_common`,
`vllm_extension` (in-place weight loading inside vLLM; `vllm_worker/` holds the file the
server imports to register the gloo engine). Nothing is imported here, so
`import azr.engine.models.sources` stays free of torch.
"""
