"""The `azr` commands that need no Prefect (the Prefect-backed `train` is added by flows/entry.py)."""
