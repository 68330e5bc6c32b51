"""Keeping only the newest logged models of a run in MLflow (`tracking.keep_logged_models`).

Each logged checkpoint is a full copy of the export (15 GB for a 7B model in bf16), so a run
that logs every tenth of 500 iterations would keep 50 of them. After each new logged model the
run's older ones beyond the newest N lose their artifacts (deleted from the artifact store) and
are marked deleted in the tracking store; their records (step, checkpoint path) stay
searchable as deleted models. Only this run's own checkpoint models (name `policy`, tagged
`azr.checkpoint`) are touched.
"""

from __future__ import annotations

from typing import Any

CHECKPOINT_TAG = "azr.checkpoint"


def run_checkpoint_models(client: Any, experiment_id: str, run_id: str, name: str = "policy") -> list[Any]:
    """The run's logged checkpoint models, oldest step first."""
    models, token = [], None
    while True:
        page = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                           page_token=token)
        models.extend(m for m in page if m.name == name and CHECKPOINT_TAG in (m.tags or {}))
        token = page.token
        if not token:
            break
    return sorted(models, key=lambda m: (int((m.params or {}).get("step", -1)), m.creation_timestamp))


def prune_logged_models(client: Any, experiment_id: str, run_id: str, keep: int | None) -> list[str]:
    """Delete the artifacts of all but the newest `keep` checkpoint models (None: keep all) and
    mark those models deleted; returns their ids."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    if keep is None:
        return []
    models = run_checkpoint_models(client, experiment_id, run_id)
    dropped = models[: max(len(models) - keep, 0)]
    for model in dropped:
        get_artifact_repository(model.artifact_location).delete_artifacts()
        client.delete_logged_model(model.model_id)
    return [model.model_id for model in dropped]
