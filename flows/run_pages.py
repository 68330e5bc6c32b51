"""What a training run shows in the Prefect UI: its name, artifacts and links to MLflow.

Artifact keys carry the training run's name, so the Artifacts page lists every run (a global
key would show only the latest run). Keys allow lowercase letters, digits and dashes.
"""

from __future__ import annotations

import re
from uuid import UUID

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.runtime import flow_run

from azr.pipeline.metrics import SUMMARY_COLUMNS, summary_rows
from azr.pipeline.run_dir import RunDir
from azr.pipeline.mlflow_run import Tracker


def artifact_key(run: RunDir, what: str) -> str:
    """`azr-<run name>-<what>`, reduced to the characters Prefect allows in a key."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run.root.name.lower()).strip("-")
    return f"azr-{slug}-{what}"


def iteration_description(run: RunDir, step: int, last: int) -> str:
    columns = "; ".join(f"**{name}**: {meaning}" for name, meaning in SUMMARY_COLUMNS.items())
    return f"Iteration {step}/{last} of {run.root.name}. Columns: {columns}."


def publish_iteration(run: RunDir, step: int, last: int, metrics: dict[str, float], iteration_run: UUID | None) -> list[dict]:
    """The iteration table on the training run (keyed per run) and on its iteration sub-flow."""
    rows = summary_rows(metrics)
    description = iteration_description(run, step, last)
    create_table_artifact(rows, key=artifact_key(run, "iterations"), description=description)
    if iteration_run is not None:
        with get_client(sync_client=True) as client:
            client.create_artifact(ArtifactCreate(type="table", data=rows, description=description,
                                                  flow_run_id=iteration_run))
    return rows


def name_flow_run(name: str) -> None:
    """Rename this flow run after the training run (a deployment run starts with a random name)."""
    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(str(flow_run.id)), name=name)


def publish_tracking_links(run: RunDir, tracker: Tracker) -> None:
    """The MLflow run as a link (when a UI address is known) or with how to open it; and the
    Prefect flow run written into the MLflow run's description."""
    prefect_url = flow_run.ui_url if flow_run.id is not None else None
    tracker.describe_run(prefect_url)
    if prefect_url:
        tracker.client.set_tag(tracker.run_id, "azr.prefect.flow_run_url", prefect_url)
    url = tracker.run_url()
    if url is not None:
        create_link_artifact(url, link_text=f"MLflow run {run.root.name}", key=artifact_key(run, "mlflow"),
                             description="The MLflow run of this training run")
        return
    store = tracker.tracking_uri
    script = f"infra/start-mlflow-ui.sh {store.removeprefix('sqlite:///')}" if store.startswith("sqlite:///") else None
    how = (f"Start the MLflow UI over this run's store with `{script}` (from the project checkout), then open the "
           "address it prints; the next training run links there directly."
           if script else f"Open the MLflow UI of `{store}`.")
    create_markdown_artifact(
        f"MLflow run `{tracker.run_id}` in experiment `{tracker.experiment_name}` (store `{store}`).\n\n{how}\n\n"
        f"Or set `tracking.ui_url` (or $AZR_MLFLOW_UI_URL) to the UI's address for a link.\n\n"
        f"Run directory: `{run.root.resolve()}`",
        key=artifact_key(run, "mlflow"), description="Where this training run is tracked",
    )
