"""The `mirops` commands: each calls one stage of `mirops.pipeline` and prints its result.

Human output goes to stderr; `--json` prints one JSON object on stdout for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from mirops import lineage


def settings_of(args: argparse.Namespace):
    from mirops.config import Settings

    return Settings.load(args.root, **overrides_of(args))


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    from mirops.config import preset_overrides
    from mirops.families import family

    # A preset sets the training recipe; --set still wins over it.
    out: dict[str, Any] = {}
    if getattr(args, "preset", None):
        out = preset_overrides(args.preset, family(getattr(args, "family", None) or "reprogram").section)
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected [SECTION.]FIELD=VALUE, e.g. reprogram.epochs=2 or seed=3")
        key = key.replace(".", "__", 1)
        try:  # numbers, booleans, lists as JSON; anything else is a string
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def emit(args: argparse.Namespace, payload: Any) -> None:
    if is_dataclass(payload):
        payload = asdict(payload)
    elif hasattr(payload, "to_json"):
        payload = payload.to_json()
    if args.json:
        print(json.dumps(payload, default=str, indent=None))


def cmd_data_demo(args):
    from mirops.pipeline import ingest

    out = Path(args.out) if args.out else None
    emit(args, ingest.demo(settings_of(args), overwrite=args.overwrite, variant=args.variant, out=out))


def cmd_data_import(args):
    from rich.console import Console

    from mirops.pipeline import ingest

    options: dict[str, Any] = {}
    if args.source == "mtat":
        options = {"split": args.split, "n_tags": args.top_tags,
                   "split_dir": Path(args.split_dir) if args.split_dir else None}
    elif args.source == "folder":
        options = {"labels_csv": Path(args.labels), "threshold": args.threshold, "group_by": args.group_by,
                   "classes": [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None}
    summary = ingest.import_dataset(settings_of(args), args.source, Path(args.source_root), out=args.out,
                                    overwrite=args.overwrite, show_progress=not args.json, **options)
    console = Console(stderr=True)
    console.print(f"[bold]imported[/] {summary.line()}")
    if summary.quarantined:
        console.print(f"  quarantine: {Path(summary.data_dir) / 'quarantine.parquet'} (clip, reason, source path)")
    if summary.excluded:
        console.print(f"  left out before audio: {summary.excluded}")
    console.print("  next: `mirops data version -m 'import ...'` to version it")
    emit(args, summary)


def cmd_data_version(args):
    from mirops.pipeline import version

    emit(args, {"dataset_version": version.version(settings_of(args), args.message, commit=not args.no_commit)})


def cmd_data_versions(args):
    from rich.console import Console
    from rich.table import Table

    from mirops.data.version import list_versions

    records = list_versions(settings_of(args).root)
    if args.json:
        emit(args, {"versions": [asdict(r) for r in records]})
        return
    table = Table("version", "created", "message", "clips", "classes", "quarantined", "splits")
    for r in records:
        table.add_row(r.version, r.created, r.message, str(r.clips), str(r.classes), str(r.quarantined),
                      " ".join(f"{k}={v}" for k, v in r.splits.items()))
    Console(stderr=True).print(table if records else "no dataset versions yet: `mirops data version`")


def cmd_data_checkout(args):
    from mirops.data.version import checkout_version

    settings = settings_of(args)
    record = checkout_version(settings.root, args.version, force=args.force, remote=settings.dvc.remote)
    print(f"data/ is now version {record.version} ({record.clips} clips, {record.message or 'no message'})",
          file=sys.stderr)
    emit(args, record)


def cmd_data_check(args):
    from mirops.pipeline import ingest

    emit(args, ingest.check_data(settings_of(args)))


def cmd_data_precompute(args):
    from mirops import flow_files

    settings = settings_of(args)
    run_precompute = flow_files.load(lineage.PRECOMPUTE_ENTRYPOINT, settings.root)
    teachers = settings.east.teachers if args.teachers == "east" else [t for t in (args.teachers or "").split(",") if t]
    emit(args, run_precompute(str(settings.root), overrides_of(args), args.task_runner,
                               args.workers or settings.ingest.workers, args.dask_address, teachers=teachers))


def cmd_audit(args):
    from mirops.audit.report import AuditFailed
    from mirops.pipeline import audit

    try:
        summary = audit.audit(settings_of(args), raise_on_failure=False, reference=args.reference)
    except AuditFailed as exc:  # pragma: no cover - raise_on_failure=False
        raise SystemExit(str(exc)) from exc
    emit(args, summary)
    if not summary.success:
        for failure in summary.critical_failures:
            print(f"critical: {failure}", file=sys.stderr)
        raise SystemExit(1)


def cmd_train(args):
    from mirops.pipeline import train

    if args.grid:
        emit(args, train.train_grid(settings_of(args), args.family, args.grid, resume=args.resume))
    else:
        emit(args, {"run_id": train.train(settings_of(args), args.family, resume=args.resume)})


def cmd_evaluate(args):
    from mirops.pipeline import evaluate

    emit(args, evaluate.evaluate(settings_of(args), args.run, args.family))


def cmd_register(args):
    from mirops.pipeline import register

    emit(args, register.register(settings_of(args), args.run, args.family))


def cmd_promote(args):
    from mirops.pipeline import promote

    settings = settings_of(args)
    if args.family and args.name:
        raise SystemExit("mirops promote: give a registered model NAME or --family, not both")
    if args.family:
        from mirops.families import family

        args.name = family(args.family).model_name(settings)
    emit(args, promote.promote(settings, args.name, args.version, dry_run=args.dry_run))


def cmd_rollback(args):
    from mirops.pipeline import promote

    emit(args, promote.rollback(settings_of(args), args.name, args.reason or "", dry_run=args.dry_run))


def cmd_predict(args):
    from rich.console import Console
    from rich.table import Table

    from mirops.pipeline.predict import predict

    result = predict(settings_of(args), args.model_uri, args.paths, batch_size=args.batch_size,
                     threshold=args.threshold)
    emit(args, result)
    console = Console(stderr=True)
    if not args.json:
        t = result.serving.threshold
        table = Table("file", f"positive (p ≥ {t:.2f})", "top probabilities", "s",
                      title=f"{result.model.name} v{result.model.version} ({result.model.uri})")
        for p in result.predictions:
            top = sorted(p.probabilities.items(), key=lambda cp: -cp[1])[:3]
            table.add_row(p.path, ", ".join(p.positive) or "-", ", ".join(f"{c} {v:.2f}" for c, v in top),
                          f"{p.duration_s:.1f}")
        console.print(table)
    for f in result.failed:  # plain lines (rich would wrap long paths): one per file, easy to grep
        print(f"failed: {f.path}: {f.reason} ({f.detail})", file=sys.stderr)
    if result.failed:  # after every result is out, so a script sees both the answers and the failures
        raise SystemExit(1)


def cmd_monitor(args):
    from mirops.pipeline import monitor

    result = monitor.monitor(settings_of(args), Path(args.current) if args.current else None, reference=args.reference)
    emit(args, result)
    if args.fail_on_drift and result.drift_detected:
        raise SystemExit(3)


def cmd_pipeline_run(args):
    from mirops import flow_files
    from mirops.data.batch import list_batch
    from mirops.data.manifest import MANIFEST

    settings = settings_of(args)
    # What the flow would only find out minutes in (after the Prefect API, the data check and the audit):
    if args.source and not (Path(args.source) / MANIFEST).is_file():
        raise FileNotFoundError(f"--source {args.source}: expected a dataset folder holding {MANIFEST} (what "
                                "`mirops data import --out DIR` or `mirops data demo --out DIR` builds)")
    if args.current:
        list_batch(Path(args.current))  # a missing or empty batch is named now
    retrain = flow_files.load(lineage.RETRAIN_ENTRYPOINT, settings.root)
    summary = retrain(root=str(settings.root), overrides=overrides_of(args), current=args.current,
                      task_runner=args.task_runner, family=args.family, grid=args.grid, source=args.source)
    emit(args, summary)
    print(where_to_look(summary, settings.root), file=sys.stderr)


def cmd_serve(args):
    import os

    if not os.environ.get("PREFECT_API_URL"):
        raise SystemExit(
            "mirops serve: PREFECT_API_URL is not set. Schedules live on a Prefect server, whose scheduler creates "
            "the runs that `mirops serve` executes: start one with `prefect server start` and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api` (or use the one `mirops ui` starts), then run "
            "`mirops serve` again.")
    from mirops import flow_files

    settings = settings_of(args)
    serve_all = flow_files.load("deployments.py:serve_all", settings.root)
    try:
        serve_all(settings, overrides_of(args) or None, echo=lambda line: print(line, file=sys.stderr),
                  announce=lambda plan: (emit(args, plan), sys.stdout.flush()))
    except ConnectionError as exc:
        raise SystemExit(f"mirops serve: {exc}") from exc


def cmd_ui(args):
    """The MLflow, Prefect and Evidently UIs of the project on localhost, until Ctrl-C (or SIGTERM) stops all three."""
    from mirops.monitor.projects import DATA_QUALITY, DRIFT, MODELS
    from mirops.pipeline import dashboards
    from mirops.services import project_uis, serve_until_stopped, ui_url

    settings = settings_of(args)
    services, notes = project_uis(settings.root, host=args.host, mlflow_port=args.mlflow_port,
                                  prefect_port=args.prefect_port, evidently_port=args.evidently_port)
    for note in notes:
        print(f"mirops ui: {note}", file=sys.stderr)
    mlflow, prefect, evidently = services
    print("mirops ui: starting the MLflow, Prefect and Evidently UIs (logs in "
          f"{mlflow.log_path.parent}) and bringing the dashboards up to date ...", file=sys.stderr)

    def ready() -> None:
        dashboards.refresh(settings)  # the UIs are up meanwhile; Evidently picks up what this writes
        projects = dashboards.project_links(settings, ui_url(evidently), (DATA_QUALITY, DRIFT, MODELS))
        urls = {"mlflow": ui_url(mlflow), "prefect": ui_url(prefect), "evidently": ui_url(evidently)}
        lines = [f"  MLflow UI     {urls['mlflow']}   (runs, registry: {settings.root / 'mlruns.db'})",
                 f"  Prefect UI    {urls['prefect']}   (flow runs; PREFECT_API_URL={prefect.url})",
                 f"  Evidently UI  {urls['evidently']}   (dashboards: {settings.root / 'dashboards' / 'workspace'})"]
        lines += [f"    {name:<12} {link}" for name, link in projects.items()]
        print("\n".join(["Dashboards of " + str(settings.root) + ":", *lines, "Ctrl-C stops all three."]),
              file=sys.stderr)
        emit(args, {**urls, "prefect_api": prefect.url, "projects": projects})
        sys.stdout.flush()

    code = serve_until_stopped(services, on_ready=ready)
    print("mirops ui: stopped" if code == 0 else "mirops ui: a server stopped on its own; stopped the others",
          file=sys.stderr)
    if code:
        raise SystemExit(code)


def where_to_look(summary: dict[str, Any], root: Path) -> str:
    """The end of `mirops pipeline run`: where the run's results are and how to look at them."""
    drift = summary["drift"]
    lines = [
        "",
        "Done. Where to look:",
        f"  dataset version   {summary['dataset_version']}  (data.dvc; `mirops data versions`)",
        f"  quarantine        {summary['quarantine']['clips']} unusable clips"
        + (f" ({', '.join(f'{n} {r}' for r, n in summary['quarantine']['reasons'].items())}) → "
           f"{summary['quarantine']['table']}" if summary["quarantine"]["clips"] else ""),
        f"  audit report      {summary['audit']['report']}  (MLflow run {summary['audit']['run_id']})",
    ]
    for family, model in summary["models"].items():
        lines += [
            f"  {family + ' run':<17} {model['run_id']}  test mAP {model['metrics'].get('test_mAP', float('nan')):.3f}",
            f"  registered model  models:/{model['name']}/{model['version']}  champion: v{model['champion']}",
            f"  promotion         {model['decision']}: {model['reason']}",
        ]
    lines += [
        f"  drift report      {drift['html_path']}  ({drift['severity']}; p = {drift['p_value']:.4f} at alpha "
        f"{drift['alpha']:g}, {len(drift['drifted_columns'])}/{drift['n_columns']} columns drifted)",
        f"  dashboards        make ui   (MLflow UI :5000 over {summary['tracking_uri']}, Prefect UI :4200, "
        f"Evidently UI :8000 over {root / 'dashboards' / 'workspace'})",
    ]
    return "\n".join(lines)
