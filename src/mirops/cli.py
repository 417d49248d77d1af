"""The `mirops` command line: thin argument parsing over the stages in `mirops.pipeline` (heavy imports stay lazy,
so `mirops --help` is instant).

Human output goes to stderr; `--json` prints one JSON object on stdout for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from mirops import lineage
from mirops.config import TRAIN_PRESETS
from mirops.offline import quiet_and_offline
from mirops.train.grid import GRIDS


def _settings(args: argparse.Namespace):
    from mirops.config import Settings

    return Settings.load(args.root, **_overrides(args))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from mirops.config import preset_overrides

    # A preset sets the training recipe; --set still wins over it.
    out: dict[str, Any] = preset_overrides(args.preset) if getattr(args, "preset", None) else {}
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


def _emit(args: argparse.Namespace, payload: Any) -> None:
    if is_dataclass(payload):
        payload = asdict(payload)
    elif hasattr(payload, "to_json"):
        payload = payload.to_json()
    if args.json:
        print(json.dumps(payload, default=str, indent=None))


def cmd_data_demo(args):
    from mirops.pipeline import ingest

    out = Path(args.out) if args.out else None
    _emit(args, ingest.demo(_settings(args), overwrite=args.overwrite, variant=args.variant, out=out))


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
    summary = ingest.import_dataset(_settings(args), args.source, Path(args.source_root), out=args.out,
                                    overwrite=args.overwrite, show_progress=not args.json, **options)
    console = Console(stderr=True)
    console.print(f"[bold]imported[/] {summary.line()}")
    if summary.quarantined:
        console.print(f"  quarantine: {Path(summary.data_dir) / 'quarantine.parquet'} (clip, reason, source path)")
    if summary.excluded:
        console.print(f"  left out before audio: {summary.excluded}")
    console.print("  next: `mirops data version -m 'import ...'` to version it")
    _emit(args, summary)


def cmd_data_version(args):
    from mirops.pipeline import version

    _emit(args, {"dataset_version": version.version(_settings(args), args.message, commit=not args.no_commit)})


def cmd_data_versions(args):
    from rich.console import Console
    from rich.table import Table

    from mirops.data.version import list_versions

    records = list_versions(_settings(args).root)
    if args.json:
        _emit(args, {"versions": [asdict(r) for r in records]})
        return
    table = Table("version", "created", "message", "clips", "classes", "quarantined", "splits")
    for r in records:
        table.add_row(r.version, r.created, r.message, str(r.clips), str(r.classes), str(r.quarantined),
                      " ".join(f"{k}={v}" for k, v in r.splits.items()))
    Console(stderr=True).print(table if records else "no dataset versions yet: `mirops data version`")


def cmd_data_checkout(args):
    from mirops.data.version import checkout_version

    record = checkout_version(_settings(args).root, args.version, force=args.force)
    print(f"data/ is now version {record.version} ({record.clips} clips, {record.message or 'no message'})",
          file=sys.stderr)
    _emit(args, record)


def cmd_data_check(args):
    from mirops.pipeline import ingest

    _emit(args, ingest.check_data(_settings(args)))


def cmd_data_precompute(args):
    from mirops import flow_files

    settings = _settings(args)
    run_precompute = flow_files.load(lineage.PRECOMPUTE_ENTRYPOINT, settings.root)
    teachers = settings.east.teachers if args.teachers == "east" else [t for t in (args.teachers or "").split(",") if t]
    _emit(args, run_precompute(str(settings.root), _overrides(args), args.task_runner,
                               args.workers or settings.ingest.workers, args.dask_address, teachers=teachers))


def cmd_audit(args):
    from mirops.audit.report import AuditFailed
    from mirops.pipeline import audit

    try:
        summary = audit.audit(_settings(args), raise_on_failure=False, reference=args.reference)
    except AuditFailed as exc:  # pragma: no cover - raise_on_failure=False
        raise SystemExit(str(exc)) from exc
    _emit(args, summary)
    if not summary.success:
        for failure in summary.critical_failures:
            print(f"critical: {failure}", file=sys.stderr)
        raise SystemExit(1)


def cmd_train(args):
    from mirops.pipeline import train

    if args.grid:
        _emit(args, train.train_grid(_settings(args), args.family, args.grid, resume=args.resume))
    else:
        _emit(args, {"run_id": train.train(_settings(args), args.family, resume=args.resume)})


def cmd_evaluate(args):
    from mirops.pipeline import evaluate

    _emit(args, evaluate.evaluate(_settings(args), args.run, args.family))


def cmd_register(args):
    from mirops.pipeline import register

    _emit(args, register.register(_settings(args), args.run, args.family))


def cmd_promote(args):
    from mirops.pipeline import promote

    _emit(args, promote.promote(_settings(args), args.name, args.version, dry_run=args.dry_run))


def cmd_rollback(args):
    from mirops.pipeline import promote

    _emit(args, promote.rollback(_settings(args), args.name, args.reason or "", dry_run=args.dry_run))


def cmd_predict(args):
    from rich.console import Console
    from rich.table import Table

    from mirops.pipeline.predict import predict

    result = predict(_settings(args), args.model_uri, args.paths, batch_size=args.batch_size,
                     threshold=args.threshold)
    _emit(args, result)
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

    result = monitor.monitor(_settings(args), Path(args.current) if args.current else None, reference=args.reference)
    _emit(args, result)
    if args.fail_on_drift and result.drift_detected:
        raise SystemExit(3)


def cmd_pipeline_run(args):
    from mirops import flow_files

    settings = _settings(args)
    retrain = flow_files.load(lineage.RETRAIN_ENTRYPOINT, settings.root)
    summary = retrain(root=str(settings.root), overrides=_overrides(args), current=args.current,
                      task_runner=args.task_runner, family=args.family, grid=args.grid, source=args.source)
    _emit(args, summary)
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

    settings = _settings(args)
    serve_all = flow_files.load("deployments.py:serve_all", settings.root)
    try:
        serve_all(settings, _overrides(args) or None, echo=lambda line: print(line, file=sys.stderr),
                  announce=lambda plan: (_emit(args, plan), sys.stdout.flush()))
    except ConnectionError as exc:
        raise SystemExit(f"mirops serve: {exc}") from exc


def cmd_ui(args):
    """The MLflow, Prefect and Evidently UIs of the project on localhost, until Ctrl-C (or SIGTERM) stops all three."""
    from mirops.monitor.projects import DATA_QUALITY, DRIFT, MODELS
    from mirops.pipeline import dashboards
    from mirops.services import project_uis, serve_until_stopped, ui_url

    settings = _settings(args)
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
        _emit(args, {**urls, "prefect_api": prefect.url, "projects": projects})
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
        f"  drift report      {drift['html_path']}  ({drift['severity']}; descriptor "
        f"drift share {drift['drift_share']:.2f}, embedding drift AUC {drift['embedding_drift_score'] or 0:.2f})",
        f"  dashboards        make ui   (MLflow UI :5000 over {summary['tracking_uri']}, Prefect UI :4200, "
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
                        help="override a params.yaml value, e.g. --set reprogram.epochs=2 (repeatable)")
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser = argparse.ArgumentParser(prog="mirops", description=__doc__.splitlines()[0])
    sub = _LeafParsers(parser.add_subparsers(dest="command", required=True), common)

    data = _LeafParsers(sub.add_parser("data", help="build and version datasets", group=True).add_subparsers(
        dest="data_cmd", required=True), common)
    demo = data.add_parser("demo", help="render the OpenMIC-style demo dataset into data/ (and production/)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing data/")
    demo.add_argument("--variant", choices=["instruments", "tagging"], default=None,
                      help="instruments: OpenMIC-style 10 s clips (+ production/); tagging: 30 s clips tagged with "
                      "instruments, tempo and style, MagnaTagATune-style, no production batch (default: demo.variant)")
    demo.add_argument("--out", help="dataset folder to build (default: data/ under --root; the instruments "
                      "variant's production batch goes beside it as OUT-production)")
    demo.set_defaults(func=cmd_data_demo)
    imp = _LeafParsers(data.add_parser("import", group=True, help="build data/ from a download or a folder + CSV")
                       .add_subparsers(dest="source", required=True), common)
    for name, text in (("openmic", "OpenMIC-2018 (labels CSV, class-map.json, partitions/, audio/)"),
                       ("mtat", "MagnaTagATune (annotations_final.csv and the mp3 folders 0/ … f/)"),
                       ("folder", "a folder of audio plus a CSV: path, one column per class, optional split/group")):
        carve = "" if name == "mtat" else " Valid is carved from train by group: --set ingest.valid_fraction=0.15" \
            " --set seed=2022."
        p = imp.add_parser(name, help=text, description=f"{text}.{carve} Audio enters data/ by ingest.link "
                           "(hardlink|copy); unusable clips go to quarantine.parquet.")
        p.add_argument("source_root", metavar="ROOT", help="the download / audio folder")
        p.add_argument("--out", help="dataset folder to build (default: data/ under --root)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
        p.set_defaults(func=cmd_data_import)
        if name == "mtat":
            p.add_argument("--split", choices=["cleaned", "directory"], default="cleaned",
                           help="cleaned: the published 15,244/1,529/4,332 lists; directory: 0-b/c/d-f")
            p.add_argument("--split-dir", help="folder with train.npy/valid.npy/test.npy (or *_list_pub.cP, "
                           "*.tsv); default: looked for in ROOT, ROOT/split, ROOT/split/mtat, ROOT/MTAT_split")
            p.add_argument("--top-tags", type=int, default=50, help="keep the N most frequent tags (default 50)")
        if name == "folder":
            p.add_argument("--labels", required=True, help="the label CSV (paths in it are relative to ROOT)")
            p.add_argument("--classes", help="comma-separated class list the CSV must match exactly")
            p.add_argument("--threshold", type=float, default=0.5, help="positive threshold for labels.json")
            p.add_argument("--group-by", choices=["file", "folder"], default="file",
                           help="without a group column: each file its own group, or its parent folder")
    ver = data.add_parser("version", help="check the audio, dvc add data/, push, commit data.dvc (in git); "
                                           "prints the version id")
    ver.add_argument("-m", "--message", default="", help="what changed in this version")
    ver.add_argument("--no-commit", action="store_true", help="do not git-commit data.dvc and the version list")
    ver.set_defaults(func=cmd_data_version)
    data.add_parser("versions", help="list the dataset versions (id, date, message, clip and class counts)"
                    ).set_defaults(func=cmd_data_versions)
    checkout = data.add_parser("checkout", help="restore data/ to a version (an id or a unique prefix)")
    checkout.add_argument("version")
    checkout.add_argument("--force", action="store_true", help="discard changes in data/ that no version records")
    checkout.set_defaults(func=cmd_data_checkout)
    data.add_parser("check", help="decode every clip; move unusable ones to data/quarantine.parquet"
                    ).set_defaults(func=cmd_data_check)
    pre = data.add_parser("precompute", help="fill the feature cache of data/ with mapped Prefect tasks")
    pre.add_argument("--task-runner", choices=["thread", "dask"], default="thread",
                     help="thread pool, or a Dask cluster through prefect-dask")
    pre.add_argument("--workers", type=int, default=None, help="threads or Dask worker processes")
    pre.add_argument("--dask-address", default=None, help="scheduler of an existing Dask cluster (default: a "
                     "LocalCluster)")
    pre.add_argument("--teachers", default=None, help="also the EAsT teachers' embeddings: a comma-separated list "
                     "(yamnet,ast,...) or `east` for east.teachers")
    pre.set_defaults(func=cmd_data_precompute)

    aud = sub.add_parser("audit", help="run the Great Expectations suites; exit 1 on a critical failure")
    aud.add_argument("--reference", help="another dataset version (id or prefix) to compare the label mix with")
    aud.set_defaults(func=cmd_audit)

    train = sub.add_parser("train", help="train a model, log it to MLflow, print the run id")
    train.add_argument("family", choices=list(lineage.FAMILY_NAMES))
    train.add_argument("--grid", choices=sorted(GRIDS),
                       help="train every variant of a grid under one parent run (reprogram paper: Chen & Lerch's "
                            "ablation; east paper: student, probe, KD, EAsT, KD + EAsT per teacher)")
    train.add_argument("--preset", choices=sorted(TRAIN_PRESETS),
                       help="training recipe: reference (Chen & Lerch: lr 1e-5, batch 4, 30 epochs) or tuned "
                            "(small data); --set overrides single values")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run of the same settings and data from its last epoch")
    train.set_defaults(func=cmd_train)

    for name, func, text in (("evaluate", cmd_evaluate, "test-split metrics and per-clip predictions of a run"),
                             ("register", cmd_register, "register a run's model as challenger, with lineage "
                                                        "tags and a model card")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", nargs="?", help="MLflow run id (default: the last `mirops train FAMILY`)")
        p.add_argument("--family", choices=list(lineage.FAMILY_NAMES), default="reprogram",
                       help="whose last training run to take when RUN is not given")
        p.set_defaults(func=func)

    prom = sub.add_parser("promote", help="the promotion gate: challenger vs champion on the same test clips "
                                          "(paired bootstrap), audit passed, no critical drift")
    prom.add_argument("name", nargs="?", help="registered model (default: registry.model_name)")
    prom.add_argument("--version", help="the version to judge (default: the challenger)")
    prom.add_argument("--dry-run", action="store_true", help="explain the decision without acting on it")
    prom.set_defaults(func=cmd_promote)
    back = sub.add_parser("rollback", help="point champion back at the previous champion")
    back.add_argument("name", nargs="?", help="registered model (default: registry.model_name)")
    back.add_argument("--reason", help="why, recorded with the decision")
    back.add_argument("--dry-run", action="store_true", help="say what would be restored without acting")
    back.set_defaults(func=cmd_rollback)

    pred = sub.add_parser("predict", help="classify audio files or folders with a registered model; exit 1 "
                          "if any file could not be decoded")
    pred.add_argument("model_uri", metavar="MODEL_URI",
                      help="models:/NAME@ALIAS or models:/NAME/VERSION (models load only through the registry)")
    pred.add_argument("paths", metavar="PATH", nargs="+", help="audio files or folders (searched recursively)")
    pred.add_argument("--batch-size", type=int, default=16, help="clip-length windows per forward pass")
    pred.add_argument("--threshold", type=float, default=None,
                      help="positive class at p ≥ THRESHOLD (default: the model's training threshold)")
    pred.set_defaults(func=cmd_predict)

    mon = sub.add_parser("monitor", help="Evidently drift report of a batch of audio vs the training data")
    mon.add_argument("--current", help="folder of audio (or with a manifest.parquet); default production/")
    mon.add_argument("--reference", metavar="V|PATH",
                     help="dataset version (id or prefix; its train split) or folder of audio to compare with; "
                          "default: the champion's dataset version, else the current one")
    mon.add_argument("--fail-on-drift", action="store_true", help="exit 3 when drift is detected")
    mon.set_defaults(func=cmd_monitor)

    pipe = _LeafParsers(sub.add_parser("pipeline", help="the whole retraining flow (Prefect)", group=True)
                        .add_subparsers(dest="pipeline_cmd", required=True), common)
    run = pipe.add_parser("run", help="demo data if none, version, audit, monitor, train, evaluate, register, "
                                      "promote")
    run.add_argument("--current", help="batch to monitor (default production/)")
    run.add_argument("--family", choices=[*lineage.FAMILY_NAMES, "both"], default="reprogram",
                     help="which model family to train and register (each has its own champion)")
    run.add_argument("--grid", choices=sorted(GRIDS), help="also train this comparison grid")
    run.add_argument("--source", help="dataset folder (with manifest.parquet) that data/ mirrors first")
    run.add_argument("--task-runner", choices=["thread", "dask"], default="thread",
                     help="runner of the mapped feature precomputation")
    run.set_defaults(func=cmd_pipeline_run)

    sub.add_parser("serve", help="serve the scheduled deployments (mirops-retrain/weekly, mirops-monitor/daily) of "
                   "params.yaml's schedule section on the Prefect server of PREFECT_API_URL (blocks)"
                   ).set_defaults(func=cmd_serve)
    ui = sub.add_parser("ui", help="the MLflow, Prefect and Evidently UIs of the project on localhost (blocks; "
                        "Ctrl-C stops all three); a port that is taken falls back to a free one")
    ui.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    ui.add_argument("--mlflow-port", type=int, default=5000, help="MLflow UI port (default 5000; 0: any free port)")
    ui.add_argument("--prefect-port", type=int, default=4200, help="Prefect UI port (default 4200; 0: any free port)")
    ui.add_argument("--evidently-port", type=int, default=8000,
                    help="Evidently UI port (default 8000; 0: any free port)")
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    root = Path(args.root or ".").resolve()
    quiet_and_offline(root)
    from mirops.audit.report import AuditFailed
    from mirops.pipeline.audit import AuditNotPassed

    try:
        args.func(args)
    except (AuditFailed, AuditNotPassed) as exc:  # the data is the problem: say so, no traceback
        print(f"mirops: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    except (FileNotFoundError, FileExistsError, LookupError, ValueError) as exc:
        print(f"mirops: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    except Exception as exc:
        if not _tracking_server_lost(exc):
            raise
        print(f"mirops: error: the MLflow tracking server ({os.environ.get('MLFLOW_TRACKING_URI')}) did not answer "
              "within the client's retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES / MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR); "
              f"nothing was registered half-way. Start it again and rerun. ({exc})", file=sys.stderr)
        raise SystemExit(4) from exc


def _tracking_server_lost(exc: BaseException) -> bool:
    text = str(exc)
    return type(exc).__name__ == "MlflowException" and "API request to" in text and (
        "Max retries exceeded" in text or "Connection refused" in text)


if __name__ == "__main__":
    main()
