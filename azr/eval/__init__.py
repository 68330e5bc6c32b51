"""Evaluation: do the checkpoints reason better? (reference §9)

Benchmarks (CRUXEval-O/-I, HumanEval, the user's own JSONL sets) are loaded into plain problem
records, turned into prompts (the training solve prompts, or a plain prompt for base models),
answered by a model or by any system's prediction file, and scored in the sandbox.

Modules, one job each:
  problems     the problem records and the data error
  jsonl, hub   reading JSONL files; reading a dataset from the Hugging Face hub
  loaders      CRUXEval, HumanEval and custom sets into problem records
  benchmarks   the registry of benchmark names
  prompting    prompts and the extraction of a prediction from a response
  programs     the HumanEval test program run in the sandbox
  scoring      predictions -> verdicts, in the sandbox
  predictions  reading a prediction file; missing, extra and malformed lines
  stats        accuracy with a Wilson confidence interval
  results      the per-problem Parquet/JSONL files and the summary
  targets      what `--model` names: a model, a checkpoint, or a training run directory
  tracking     the MLflow run of an evaluation (nested under a training run when there is one)
  generate     greedy generation in chunks, with progress
  evaluate     responses or a prediction file -> per-problem result rows
  runner       an evaluation end to end, as stages on files
  in_training  `evaluate_policy`: the resident policy on a configured subset, for the training flow

Nothing here imports Prefect; `flows/evaluation.py` wraps the runner's stages as tasks.
"""
