"""Prefect tasks, one per self-play stage: read Parquet, call `azr`, write Parquet, log.

They stay thin on purpose: every line that would still be needed without Prefect lives in
`azr/` (see DESIGN.md). The stages arrive with the pipeline issue.
"""
