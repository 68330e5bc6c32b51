"""The model side of AZR, split by the process each part runs in.

- `api`: the policy boundary (`PolicyHandle`, `SamplingSettings`, `GenerationRequest`,
  `Completion`, `TrainSequence`, `UpdateMetrics`, `CheckpointInfo`); no torch.
- `protocol`: the controller-engine commands and replies (typed), and the exchange files; no torch.
- `controller/`: the flow process's side: `client.EngineClient` (a `PolicyHandle` with no
  model) and `launch` (the `accelerate launch` command); no torch.
- `rank/`: every engine rank: `service` (the command loop) and `policy.Policy` (model,
  optimizer, rollout backend).
- `training/`: the TRR++ update (`trrpp_loss` the per-token terms, `trrpp_update` the step),
  log-probs, the update's batch, FSDP2/ZeRO-3, checkpoints.
- `rollout/`: generation backends: transformers (one process or sharded over ranks) and vLLM.
- `models/`: loading, tokenizer, model sources, GGUF conversion.

Nothing is imported here, so `import azr.engine.models.sources` stays free of torch.
"""
