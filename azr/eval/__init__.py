"""Evaluation: do the checkpoints reason better? (docs/algorithm.md §11)

Benchmarks (the paper's table: HumanEval+, MBPP+, LiveCodeBench and six math benchmarks;
CRUXEval-O/-I, HumanEval, the user's own JSONL sets) are loaded into plain problem
records, turned into prompts (the training solve prompts, or a plain prompt for base models),
answered by a model or by any system's prediction file, and scored in the sandbox.

Modules, one job each:
  problems     the problem records and the data error
  jsonl, hub   reading JSONL files; reading a dataset from the Hugging Face hub
  loaders      every benchmark's files into problem records
  ids, downloads  a row's prediction id; public files fetched once into the data folder
  evalplus     HumanEval+/MBPP+ layout and the sandbox program that judges a solution as EvalPlus
  livecodebench  LiveCodeBench release_v5: rows, private-test decoding, date window, sandbox program
  math_answers the math harness' files and answer extraction (<answer>, last \\boxed{})
  math_check   math-verify equivalence in worker processes under a time limit
  code_scoring, math_scoring  scoring the paper's code and math benchmarks
  passk        the unbiased pass@k estimator
  suite        the paper's table: every benchmark, one model load, table, MLflow run
  benchmarks   the registry of benchmark names and suites
  prompting    prompts and the extraction of a prediction from a response (prompting_paper: the
               paper's benchmarks)
  programs     the HumanEval test program run in the sandbox
  scoring      predictions -> verdicts, in the sandbox
  predictions  reading a prediction file; missing, extra and malformed lines
  stats        accuracy with a Wilson confidence interval
  results      the per-problem Parquet/JSONL files and the summary
  targets      what `--model` names: a model, a checkpoint, or a training run directory
  tracking     the MLflow run of an evaluation (nested under a training run when there is one)
  generate     greedy (or n-sample) generation in chunks, with progress
  evaluate     responses or a prediction file -> per-problem result rows
  runner       an evaluation end to end, as stages on files
  in_training  `evaluate_policy`: the resident policy on a configured subset, for the training flow

Nothing here imports Prefect; `flows/evaluation.py` wraps the runner's stages as tasks.
"""
