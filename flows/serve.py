"""`newsflow serve`: serve prefect.yaml's deployments from this process, for users who want no work pool.

Prefect's `serve` registers each deployment with the API and runs its scheduled (and manually
started) flow runs in subprocesses of this one. The schedules and parameters are prefect.yaml's
(read through `flows.deployments`), so served and deployed flows run on the same timetable.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from flows.deployments import DeploymentSpec, deployment_specs, runner_deployment, schedule_text


def schedule_table(specs: list[DeploymentSpec]) -> Table:
    """The deployments to serve, with their schedules, as a rich table."""
    table = Table(title="newsflow serve: deployments and schedules")
    for column in ("deployment", "schedule", "parameters", "description"):
        table.add_column(column)
    for spec in specs:
        flow_name = spec.entrypoint.rsplit(":", 1)[-1]
        params = ", ".join(f"{k}={v!r}" for k, v in spec.parameters.items()) or "(defaults)"
        table.add_row(f"{flow_name}/{spec.name}", schedule_text(spec), params, spec.description)
    return table


def servable(console: Console) -> list[DeploymentSpec]:
    """prefect.yaml's deployments whose entrypoint file exists; the others are reported and left out."""
    specs = []
    for spec in deployment_specs():
        if spec.path.is_file():
            specs.append(spec)
        else:
            console.print(f"[yellow]not serving {spec.name}:[/] {spec.entrypoint} does not exist", highlight=False)
    return specs


def serve(dry_run: bool = False, console: Console | None = None) -> list[DeploymentSpec]:
    """Print the schedule, then serve until interrupted (or return at once with `dry_run`)."""
    console = console or Console()
    specs = servable(console)
    console.print(schedule_table(specs))
    if not dry_run:
        from prefect import serve as prefect_serve

        prefect_serve(*(runner_deployment(s) for s in specs))
    return specs
