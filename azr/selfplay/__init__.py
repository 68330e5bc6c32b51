"""The AZR algorithm itself: prompts, parsing, proposal checks, rewards, TRR++ advantages,
buffers. Pure Python: no torch, no files, no Prefect. Start with `iteration.py`."""
