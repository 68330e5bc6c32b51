"""What the content checksums cost: the sha256 of every checkpoint file (written into its
COMPLETE marker at save, verified on resume and by `azr runs verify`) and Parquet's page CRCs
(stage files and the buffer log).

Checkpoint: the cpu preset's policy (the bundled SmolLM2-135M, fp32 master weights, AdamW
state filled by one zero-gradient step, so the files have their real sizes) saved `--runs`
times. For each save: the whole save (which now includes the checksums), the checksums alone
(recomputed on the same files), and the resume check without and with the content check.
Parquet: a table shaped like a cpu-preset scored.parquet (token-id lists) written and read with
and without page checksums. Medians; the ratios are against the baseline of the same run.

    python benchmarks/checksums.py [--runs 5] [--rows 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _median_s(function, runs: int) -> float:  # noqa: ANN001 - a callable
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def checkpoint_costs(runs: int, root: Path) -> None:
    import torch

    from azr.config.loading import build_config
    from azr.engine.rank.policy import Policy
    from azr.engine.training.checkpoints import MARKER, checkpoint_problems
    from azr.pipeline.atomic_io import tree_checksums

    policy = Policy.create(build_config("cpu"), cpu=True)
    for parameter in policy.model.parameters():  # AdamW's moments exist after a first step
        parameter.grad = torch.zeros_like(parameter)
    policy.optimizer.step()
    policy.optimizer.zero_grad()
    save, sums, check, verify = [], [], [], []
    size = 0
    for step in range(1, runs + 1):
        started = time.perf_counter()
        path = policy.save_checkpoint(root, step)
        save.append(time.perf_counter() - started)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        sums.append(_median_s(lambda: tree_checksums(path, skip=(MARKER,)), 1))
        check.append(_median_s(lambda: checkpoint_problems(path, content=False), 1))
        verify.append(_median_s(lambda: checkpoint_problems(path, content=True), 1))
        assert not checkpoint_problems(path)
    save_s, sums_s, check_s, verify_s = (statistics.median(x) for x in (save, sums, check, verify))
    print(f"checkpoint of the cpu preset: {size / 2**30:.2f} GiB in {len(list(path.rglob('*')))} entries, {runs} saves")
    print(f"  save (with checksums)      {save_s:7.2f} s   of which sha256 {sums_s:.2f} s "
          f"= {sums_s / (save_s - sums_s):.1%} on top of the save without it")
    print(f"  resume check, structure    {check_s:7.2f} s")
    print(f"  resume check, + sha256     {verify_s:7.2f} s   ({verify_s / check_s:.1f}x; "
          f"{size / 2**20 / max(verify_s - check_s, 1e-9):.0f} MiB/s hashed)")


def parquet_costs(runs: int, rows: int, root: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    generator = np.random.default_rng(0)
    table = pa.table({
        "prompt_token_ids": [generator.integers(0, 49152, 700).tolist() for _ in range(rows)],
        "response_token_ids": [generator.integers(0, 49152, 300).tolist() for _ in range(rows)],
        "advantage": generator.normal(size=rows),
    })
    plain, summed = root / "plain.parquet", root / "summed.parquet"
    write_plain = _median_s(lambda: pq.write_table(table, plain), runs)
    write_summed = _median_s(lambda: pq.write_table(table, summed, write_page_checksum=True), runs)
    read_plain = _median_s(lambda: pq.read_table(plain), runs)
    read_summed = _median_s(lambda: pq.read_table(summed, page_checksum_verification=True), runs)
    print(f"Parquet, {rows} rows x 1000 token ids ({summed.stat().st_size / 2**20:.1f} MiB), median of {runs}:")
    print(f"  write {write_plain * 1000:7.1f} ms, with page CRCs {write_summed * 1000:7.1f} ms ({write_summed / write_plain:.2f}x)")
    print(f"  read  {read_plain * 1000:7.1f} ms, verified       {read_summed * 1000:7.1f} ms ({read_summed / read_plain:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--skip-checkpoint", action="store_true", help="Parquet only (no model load).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="azr-checksums-", dir=Path.cwd()) as scratch:
        parquet_costs(args.runs, args.rows, Path(scratch))
        if not args.skip_checkpoint:
            checkpoint_costs(args.runs, Path(scratch) / "checkpoints")


if __name__ == "__main__":
    main()
