"""Moving `champion`: promotions and rollbacks, each one recorded as an MLflow run and as version tags.

The alias is the truth about who serves. Beside it, the registered model keeps a tag with the stack of
champions (oldest first): a promotion pushes, a rollback pops, so rolling back twice walks back through
history instead of bouncing between two versions. Every move happens under `registry_lock`, and the stack
is written before the alias: if a process dies between the two, the next move repairs the stack from
the alias (`champion_stack`), so neither the alias nor the previous champion is ever lost.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mirops import lineage
from mirops.registry import tracking
from mirops.registry.models import CHAMPION, alias_version

TAG_STACK, TAG_DECISION, TAG_DECISION_RUN = lineage.TAG_CHAMPION_STACK, lineage.TAG_DECISION, lineage.TAG_DECISION_RUN
STEP = lineage.STEP_PROMOTE


@dataclass
class Decision:
    """What the gate concluded, with everything a reviewer needs to agree or not."""

    action: str                         # "promote" | "reject" | "rollback" | "noop"
    name: str
    version: str                        # the version the decision is about (the challenger, or the restored one)
    champion_before: str | None
    champion_after: str | None
    reason: str                         # one sentence
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)  # check -> {passed, detail, ...}
    dataset_version: str | None = None
    dry_run: bool = False
    run_id: str | None = None           # the MLflow run that records it
    decided_at: float = field(default_factory=time.time)

    @property
    def moves_champion(self) -> bool:
        return self.action in ("promote", "rollback") and self.champion_after != self.champion_before

    def explain(self) -> str:
        head = {"promote": "PROMOTE", "reject": "REJECT", "rollback": "ROLLBACK", "noop": "NO CHANGE"}[self.action]
        lines = [f"{head} {self.name} v{self.version}: {self.reason}"]
        for check, outcome in self.checks.items():
            mark = "ok  " if outcome.get("passed") else "FAIL"
            lines.append(f"  [{mark}] {check}: {outcome.get('detail', '')}")
        if self.dry_run:
            lines.append("  (dry run: nothing was changed)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _read_stack(client: MlflowClient, name: str) -> list[str]:
    raw = client.get_registered_model(name).tags.get(TAG_STACK)
    return [str(v) for v in json.loads(raw)] if raw else []


def _exists(client: MlflowClient, name: str, version: str) -> bool:
    try:
        client.get_model_version(name, version)
        return True
    except MlflowException:
        return False


def champion_stack(name: str) -> list[str]:
    """Champions oldest first, the last one serving; repaired from the alias if a move was cut short."""
    client = MlflowClient()
    stack = _read_stack(client, name)
    champion = alias_version(name, CHAMPION)
    if champion is None or (stack and stack[-1] == champion):
        return stack
    if len(stack) >= 2 and stack[-2] == champion:  # a rollback wrote the stack, then died before the alias
        return stack[:-1]
    return stack + [champion]  # a promotion moved the alias without the stack (or a champion set by hand)


def _record(settings, decision: Decision, metrics: dict[str, float], artifacts: dict[str, Any]) -> str:
    """The decision as its own MLflow run (tags, metrics, decision.json), returning the run id."""
    with tracking.run(settings, f"{decision.action} {decision.name} v{decision.version}", STEP,
                      decision.dataset_version or "unknown") as active:
        active.set_tags({lineage.TAG_MODEL_NAME: decision.name, lineage.TAG_ACTION: decision.action,
                         lineage.TAG_VERSION: decision.version,
                         lineage.TAG_CHAMPION_BEFORE: decision.champion_before,
                         lineage.TAG_CHAMPION_AFTER: decision.champion_after,
                         "mlflow.note.content": decision.explain()})
        active.log_metrics(metrics)
        active.log_json(decision.to_json() | {"run_id": active.id}, lineage.DECISION_FILE)
        for artifact_file, payload in artifacts.items():
            active.log_json(payload, artifact_file)
        return active.id


def apply(settings, decision: Decision, metrics: dict[str, float] | None = None,
          artifacts: dict[str, Any] | None = None) -> Decision:
    """Record `decision` and, for a promotion or rollback, move `champion` (the caller holds the lock)."""
    client = MlflowClient()
    decision.run_id = _record(settings, decision, metrics or {}, artifacts or {})
    client.set_model_version_tag(decision.name, decision.version, TAG_DECISION, decision.reason)
    client.set_model_version_tag(decision.name, decision.version, TAG_DECISION_RUN, decision.run_id)
    if not decision.moves_champion:
        return decision
    stack = champion_stack(decision.name)
    if decision.action == "promote":
        stack = stack + [decision.version]
    else:  # rollback: drop the top, and any deleted versions between it and the restored one
        stack = stack[:-1]
        while stack and stack[-1] != decision.champion_after:
            stack.pop()
        if decision.champion_before:
            client.set_model_version_tag(decision.name, decision.champion_before, lineage.TAG_ROLLED_BACK_BY,
                                         decision.run_id)
    client.set_registered_model_tag(decision.name, TAG_STACK, json.dumps(stack))
    client.set_registered_model_alias(decision.name, CHAMPION, decision.champion_after)  # the atomic switch
    return decision


def previous_champion(name: str) -> str | None:
    """The champion a rollback would restore: the newest earlier one that still exists."""
    client = MlflowClient()
    stack = champion_stack(name)
    while len(stack) >= 2:
        if _exists(client, name, stack[-2]):
            return stack[-2]
        stack = stack[:-2] + stack[-1:]  # a deleted version cannot serve again: skip it
    return None
