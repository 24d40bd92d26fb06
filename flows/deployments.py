"""newsflow's deployments, read from `prefect.yaml`: the one place that names them and their schedules.

`prefect deploy --all` reads the file itself; `newsflow serve` and the tests read it through here,
so a served flow has exactly the schedule and parameters of the deployed one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow
from prefect.flows import load_flow_from_entrypoint

REPO = Path(__file__).resolve().parent.parent
PREFECT_YAML = REPO / "prefect.yaml"


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """One entry of prefect.yaml's `deployments` list (the fields newsflow uses)."""

    name: str
    entrypoint: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: tuple[dict[str, Any], ...] = ()

    @property
    def path(self) -> Path:
        """The entrypoint's file, relative to the repository."""
        return REPO / self.entrypoint.split(":")[0]


def deployment_specs(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    """The deployments declared in prefect.yaml, in order."""
    document = yaml.safe_load(path.read_text("utf-8"))
    return [DeploymentSpec(name=d["name"], entrypoint=d["entrypoint"],
                           description=(d.get("description") or "").strip(),
                           parameters=dict(d.get("parameters") or {}),
                           schedules=tuple(d.get("schedules") or ()))
            for d in document["deployments"]]


def load_flow(spec: DeploymentSpec) -> Flow:
    """The flow object of a deployment's entrypoint (`path/to/file.py:function`)."""
    return load_flow_from_entrypoint(str(REPO / spec.entrypoint))


def schedule_text(spec: DeploymentSpec) -> str:
    """A deployment's schedules for people: `0 * * * * (UTC)`, or `on demand`."""
    parts = [f"{s['cron']} ({s.get('timezone', 'UTC')})" if "cron" in s else f"every {s['interval']} s"
             for s in spec.schedules]
    return ", ".join(parts) or "on demand"


def runner_deployment(spec: DeploymentSpec) -> Any:
    """A `RunnerDeployment` for `prefect.serve`, with prefect.yaml's schedules and parameters."""
    from prefect.schedules import Cron, Interval

    schedules = [Cron(s["cron"], timezone=s.get("timezone", "UTC")) if "cron" in s
                 else Interval(s["interval"]) for s in spec.schedules]
    return load_flow(spec).to_deployment(name=spec.name, description=spec.description or None,
                                         parameters=spec.parameters, schedules=schedules or None)
