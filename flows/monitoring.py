"""The Prefect side of the monitors: each finding of an iteration becomes an event.

`azr.monitor.<name>` (diversity_collapse, reference_copying, step_time_growth,
response_length_growth, memory_growth, saturation, safety) concerns the resource
`azr.run.<run dir name>`; emitted inside the training flow run, Prefect relates it to that flow
run, so an automation (prefect.yaml, `automations:`) can pause, cancel or notify on it.

Every event of a run has an id derived from what it says (`event_id`): a resumed run that
replays an iteration's post-commit work sends the same ids again, and Prefect's server keeps
one event per id (it stores events with ON CONFLICT DO NOTHING, and its triggers skip an id
already seen), so a kill between an event and the record of it never makes an automation
fire twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from prefect import get_run_logger
from prefect.events import emit_event

from azr.ops.monitors import Finding


def event_id(run_root: Path, *parts: object) -> uuid.UUID:
    """The same id for the same event of the same run, every time it is sent."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "azr-event:" + "/".join([str(run_root.resolve()), *map(str, parts)]))


def emit_findings(run_root: Path, findings: Sequence[Finding]) -> int:
    """One Prefect event and one warning per finding; how many events were emitted."""
    logger = get_run_logger()
    emitted = 0
    for finding in findings:
        logger.warning("monitor %s at iteration %d: %s", finding.name, finding.step, finding.message)
        event = emit_event(
            finding.event,
            resource={"prefect.resource.id": f"azr.run.{run_root.name}", "prefect.resource.name": run_root.name},
            payload={**finding.as_dict(), "run_dir": str(run_root.resolve())},
            id=event_id(run_root, finding.event, finding.step),
        )
        emitted += event is not None
    return emitted
