"""The scheduled deployments `mirops serve` keeps running, built from params.yaml's `schedule` section:

- `mirops-retrain/weekly`: the retraining pipeline (`schedule.retrain_cron`) with the dataset source, the
  model family and the grid of `schedule`; the drift monitor starts it too, with a `trigger`;
- `mirops-monitor/daily`: the drift monitor (`schedule.monitor_cron`) on `schedule.current`.

The names stay the same whatever the crons say, so scripts and the monitor can start them by name.
The retraining deployment runs one flow run at a time (concurrency limit 1, ENQUEUE): a drift-triggered run
that comes while the weekly one runs waits on the server (state AwaitingConcurrencySlot) instead of starting
beside it; inside the flow the project's lock also keeps out retrainings started any other way.
Serving needs a Prefect server (PREFECT_API_URL): its scheduler creates the runs, this process runs them.
"""

from __future__ import annotations

from typing import Any

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_URL

from mirops import flow_files
from mirops.config import Settings
from mirops.lineage import MONITOR_DEPLOYMENT, MONITOR_ENTRYPOINT, RETRAIN_DEPLOYMENT, RETRAIN_ENTRYPOINT


def build_deployments(settings: Settings, overrides: dict[str, Any] | None = None) -> list:
    """The two RunnerDeployments (not yet applied); `overrides` (`section__field`) go to both flows."""
    retrain = flow_files.load(RETRAIN_ENTRYPOINT, settings.root)
    monitor = flow_files.load(MONITOR_ENTRYPOINT, settings.root)
    plan = settings.schedule
    common: dict[str, Any] = {"root": str(settings.root)} | ({"overrides": overrides} if overrides else {})
    retrain_deployment = retrain.to_deployment(
        name=RETRAIN_DEPLOYMENT.split("/")[1],
        schedules=[Cron(plan.retrain_cron, timezone=plan.timezone)],
        parameters=common | {"family": plan.family, "grid": plan.grid, "source": plan.source},
        description="Retrain on the newest data: version, audit, train, evaluate, register, promote.",
        tags=["mirops", "retrain"],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
    )
    monitor_deployment = monitor.to_deployment(
        name=MONITOR_DEPLOYMENT.split("/")[1],
        schedules=[Cron(plan.monitor_cron, timezone=plan.timezone)],
        parameters=common | {"current": plan.current},
        description="Drift of incoming audio vs the training data; a drifted verdict starts "
                    f"{RETRAIN_DEPLOYMENT}" + ("" if plan.retrain_on_drift else " (off: schedule.retrain_on_drift)"),
        tags=["mirops", "monitor"],
    )
    return [retrain_deployment, monitor_deployment]


def describe(deployments: list) -> list[dict[str, Any]]:
    """Name, cron, time zone and parameters of each deployment, for people and `--json`."""
    out = []
    for d in deployments:
        schedule = d.schedules[0].schedule if d.schedules else None
        out.append({"name": f"{d.flow_name}/{d.name}", "cron": getattr(schedule, "cron", None),
                    "timezone": getattr(schedule, "timezone", None), "parameters": d.parameters})
    return out


def check_api(api_url: str) -> None:
    """Raise ConnectionError with the reason when the Prefect server at `api_url` does not answer."""
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise ConnectionError(f"the Prefect server at {api_url} does not answer ({problem}); is "
                              "`prefect server start` running there?")


def serve_all(settings: Settings, overrides: dict[str, Any] | None = None, echo=print, announce=None) -> None:
    """Create or update both deployments on the Prefect server and run their flow runs here (blocks).

    `echo` gets the human lines; `announce` (if given) {"prefect_api_url", "deployments"} before serving starts.
    """
    api_url = PREFECT_API_URL.value()
    check_api(api_url)
    deployments = build_deployments(settings, overrides)
    described = describe(deployments)
    echo(f"serving on the Prefect server at {api_url} (Ctrl-C stops; the schedules pause until the next serve):")
    for d in described:
        echo(f"  {d['name']:<24} cron {d['cron']!r} ({d['timezone']})  parameters {d['parameters']}")
    if announce is not None:
        announce({"prefect_api_url": api_url, "deployments": described})
    serve(*deployments, print_starting_message=False)
