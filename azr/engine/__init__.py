"""The model side of AZR: loading, generation backends, the TRR++ update, checkpoints."""
