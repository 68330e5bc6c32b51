"""The TRR++ update on the ranks: sequences, log-probs, loss, distributed strategies, checkpoints."""
