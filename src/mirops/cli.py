"""The `mirops` command line: thin argument parsing over `mirops.steps` (heavy imports stay lazy).

Human output goes to stderr; `--json` prints one JSON object on stdout for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from mirops.offline import quiet_and_offline


def _settings(args: argparse.Namespace):
    from mirops.config import Settings

    return Settings.load(args.root, **_overrides(args))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected [SECTION.]FIELD=VALUE, e.g. train.epochs=2 or seed=3")
        key = key.replace(".", "__", 1)
        try:  # numbers, booleans, lists as JSON; anything else is a string
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _emit(args: argparse.Namespace, payload: Any) -> None:
    if is_dataclass(payload):
        payload = asdict(payload)
    elif hasattr(payload, "to_json"):
        payload = payload.to_json()
    if args.json:
        print(json.dumps(payload, default=str, indent=None))


def cmd_data_demo(args):
    from mirops import steps

    _emit(args, steps.demo(_settings(args), overwrite=args.overwrite))


def cmd_data_version(args):
    from mirops import steps

    _emit(args, {"dataset_version": steps.version(_settings(args))})


def cmd_audit(args):
    from mirops import steps
    from mirops.audit.report import AuditFailed

    try:
        summary = steps.audit(_settings(args), raise_on_failure=False)
    except AuditFailed as exc:  # pragma: no cover - raise_on_failure=False
        raise SystemExit(str(exc)) from exc
    _emit(args, summary)
    if not summary.success:
        for failure in summary.critical_failures:
            print(f"critical: {failure}", file=sys.stderr)
        raise SystemExit(1)


def cmd_train(args):
    from mirops import steps

    if args.family != "reprogram":
        raise SystemExit(f"mirops train {args.family}: not available yet (only `reprogram`)")
    _emit(args, {"run_id": steps.train(_settings(args))})


def cmd_evaluate(args):
    from mirops import steps

    _emit(args, steps.evaluate(_settings(args), args.run))


def cmd_register(args):
    from mirops import steps

    _emit(args, steps.register(_settings(args), args.run))


def cmd_monitor(args):
    from mirops import steps

    result = steps.monitor(_settings(args), Path(args.current) if args.current else None)
    _emit(args, result)
    if args.fail_on_drift and result.drift_detected:
        raise SystemExit(3)


def cmd_pipeline_run(args):
    from flows.retrain import retrain

    settings = _settings(args)
    summary = retrain(root=str(settings.root), overrides=_overrides(args), current=args.current)
    _emit(args, summary)
    print(where_to_look(summary, settings.root), file=sys.stderr)


def where_to_look(summary: dict[str, Any], root: Path) -> str:
    """The end of `mirops pipeline run`: where the run's results are and how to look at them."""
    model = summary["model"]
    drift = summary["drift"]
    lines = [
        "",
        "Done. Where to look:",
        f"  dataset version   {summary['dataset_version']}  (data.dvc; `dvc status`)",
        f"  audit report      {summary['audit']['report']}  (MLflow run {summary['audit']['run_id']})",
        f"  MLflow run        {summary['run_id']}  test mAP {summary['metrics'].get('test_mAP', float('nan')):.3f}",
        f"  registered model  models:/{model['name']}/{model['version']}  aliases {', '.join(model['aliases'])}"
        f"  ({model['decision']})",
        f"  drift report      {drift['html_path']}  (drift detected: {drift['drift_detected']}; descriptor "
        f"drift share {drift['drift_share']:.2f}, embedding drift AUC {drift['embedding_drift_score'] or 0:.2f})",
        f"  dashboards        make ui   (MLflow UI :5000 over {summary['tracking_uri']}, "
        f"Evidently UI :8000 over {root / 'dashboards' / 'workspace'})",
    ]
    return "\n".join(lines)


class _LeafParsers:
    """Subparsers whose leaves all take the common options, so `mirops audit --json` works."""

    def __init__(self, subparsers, common: argparse.ArgumentParser) -> None:
        self.subparsers, self.common = subparsers, common

    def add_parser(self, name: str, group: bool = False, **kwargs) -> argparse.ArgumentParser:
        return self.subparsers.add_parser(name, parents=[] if group else [self.common], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=None, help="project root holding params.yaml (default: .)")
    common.add_argument("--set", action="append", metavar="[SECTION.]FIELD=VALUE",
                        help="override a params.yaml value, e.g. --set train.epochs=2 (repeatable)")
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser = argparse.ArgumentParser(prog="mirops", description=__doc__.splitlines()[0])
    sub = _LeafParsers(parser.add_subparsers(dest="command", required=True), common)

    data = _LeafParsers(sub.add_parser("data", help="build and version datasets", group=True).add_subparsers(
        dest="data_cmd", required=True), common)
    demo = data.add_parser("demo", help="render the OpenMIC-style demo dataset into data/ (and production/)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing data/")
    demo.set_defaults(func=cmd_data_demo)
    data.add_parser("version", help="dvc add data/ and push; prints the version id").set_defaults(
        func=cmd_data_version)

    sub.add_parser("audit", help="run the Great Expectations suites; exit 1 on a critical failure").set_defaults(
        func=cmd_audit)

    train = sub.add_parser("train", help="train a model, log it to MLflow, print the run id")
    train.add_argument("family", choices=["reprogram", "east"])
    train.set_defaults(func=cmd_train)

    for name, func, text in (("evaluate", cmd_evaluate, "test-split metrics of a training run"),
                             ("register", cmd_register, "register a run's model: challenger, maybe champion")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", nargs="?", help="MLflow run id (default: the last `mirops train`)")
        p.set_defaults(func=func)

    mon = sub.add_parser("monitor", help="Evidently drift report of a batch of audio vs the training data")
    mon.add_argument("--current", help="folder of audio (or with a manifest.parquet); default production/")
    mon.add_argument("--fail-on-drift", action="store_true", help="exit 3 when drift is detected")
    mon.set_defaults(func=cmd_monitor)

    pipe = _LeafParsers(sub.add_parser("pipeline", help="the whole retraining flow (Prefect)", group=True)
                        .add_subparsers(dest="pipeline_cmd", required=True), common)
    run = pipe.add_parser("run", help="demo data if none, version, audit, train, evaluate, register, monitor")
    run.add_argument("--current", help="batch to monitor (default production/)")
    run.set_defaults(func=cmd_pipeline_run)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    root = Path(args.root or ".").resolve()
    quiet_and_offline(root)
    from mirops.audit.report import AuditFailed
    from mirops.steps import AuditNotPassed

    try:
        args.func(args)
    except (AuditFailed, AuditNotPassed) as exc:  # the data is the problem: say so, no traceback
        print(f"mirops: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    except (FileNotFoundError, LookupError, ValueError) as exc:
        print(f"mirops: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
