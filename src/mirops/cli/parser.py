"""The `mirops` argument parser: every command, its options and its help text (`mirops --help`)."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata

from mirops import __version__, lineage
from mirops.cli import commands as c
from mirops.config import PRESET_NAMES
from mirops.train.grid import GRIDS

DESCRIPTION = "Train, audit, register and monitor music classifiers from scarce, partially labelled data."


def version_line() -> str:
    """`mirops --version`: the package and the stack it runs on (read from metadata, nothing imported)."""
    stack = []
    for dist in ("torch", "mlflow", "prefect", "dvc", "great_expectations", "evidently"):
        try:
            stack.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            stack.append(f"{dist} missing")
    return f"mirops {__version__} (python {sys.version.split()[0]}; {', '.join(stack)})"


class LeafParsers:
    """Subparsers whose leaves all take the common options, so `mirops audit --json` works."""

    def __init__(self, subparsers, common: argparse.ArgumentParser) -> None:
        self.subparsers, self.common = subparsers, common

    def add_parser(self, name: str, group: bool = False, **kwargs) -> argparse.ArgumentParser:
        return self.subparsers.add_parser(name, parents=[] if group else [self.common], **kwargs)


class Parser(argparse.ArgumentParser):
    """Usage errors as one JSON object on stdout when `--json` was asked for (scripts parse stdout)."""

    json_errors = False  # set by `mirops.cli.main` when --json is on the command line

    def error(self, message: str):
        if self.json_errors:
            print(json.dumps({"error": f"{self.prog}: {message}", "kind": "usage", "exit_code": 2}))
            raise SystemExit(2)
        super().error(message)


def add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """--root, --set and --json: before the command (`mirops --json audit`) or after it (`mirops audit
    --json`). After it they default to SUPPRESS, so they do not overwrite what was given before."""
    default = {"default": argparse.SUPPRESS} if suppress else {}
    parser.add_argument("--root", **(default or {"default": None}),
                        help="project root holding params.yaml (default: .)")
    parser.add_argument("--set", action="append", dest="set_after" if suppress else "set",
                        metavar="[SECTION.]FIELD=VALUE", **default,
                        help="override a params.yaml value, e.g. --set reprogram.epochs=2 (repeatable)")
    parser.add_argument("--json", action="store_true", **default, help="print one JSON object on stdout")


def merge_common(args: argparse.Namespace) -> argparse.Namespace:
    """--set given before and after the command both count (after wins on the same key)."""
    args.set = (args.set or []) + (getattr(args, "set_after", None) or [])
    return args


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_common(common, suppress=True)
    parser = Parser(prog="mirops", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=version_line())
    add_common(parser, suppress=False)
    sub = LeafParsers(parser.add_subparsers(dest="command", required=True, parser_class=Parser), common)

    data = LeafParsers(sub.add_parser("data", help="build and version datasets", group=True).add_subparsers(
        dest="data_cmd", required=True), common)
    demo = data.add_parser("demo", help="render the OpenMIC-style demo dataset into data/ (and production/)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing data/")
    demo.add_argument("--variant", choices=["instruments", "tagging"], default=None,
                      help="instruments: OpenMIC-style 10 s clips (+ production/); tagging: 30 s clips tagged with "
                      "instruments, tempo and style, MagnaTagATune-style, no production batch (default: demo.variant)")
    demo.add_argument("--out", help="dataset folder to build (default: data/ under --root; the instruments "
                      "variant's production batch goes beside it as OUT-production)")
    demo.set_defaults(func=c.cmd_data_demo)
    imp = LeafParsers(data.add_parser("import", group=True, help="build data/ from a download or a folder + CSV")
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
        p.set_defaults(func=c.cmd_data_import)
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
    ver.set_defaults(func=c.cmd_data_version)
    data.add_parser("versions", help="list the dataset versions (id, date, message, clip and class counts)"
                    ).set_defaults(func=c.cmd_data_versions)
    checkout = data.add_parser("checkout", help="restore data/ to a version (an id or a unique prefix)")
    checkout.add_argument("version")
    checkout.add_argument("--force", action="store_true", help="discard changes in data/ that no version records")
    checkout.set_defaults(func=c.cmd_data_checkout)
    data.add_parser("check", help="decode every clip; move unusable ones to data/quarantine.parquet"
                    ).set_defaults(func=c.cmd_data_check)
    pre = data.add_parser("precompute", help="fill the feature cache of data/ with mapped Prefect tasks")
    pre.add_argument("--task-runner", choices=["thread", "dask"], default="thread",
                     help="thread pool, or a Dask cluster through prefect-dask")
    pre.add_argument("--workers", type=int, default=None, help="threads or Dask worker processes")
    pre.add_argument("--dask-address", default=None, help="scheduler of an existing Dask cluster (default: a "
                     "LocalCluster)")
    pre.add_argument("--teachers", default=None, help="also the EAsT teachers' embeddings: a comma-separated list "
                     "(yamnet,ast,...) or `east` for east.teachers")
    pre.set_defaults(func=c.cmd_data_precompute)

    aud = sub.add_parser("audit", help="run the Great Expectations suites; exit 1 on a critical failure")
    aud.add_argument("--reference", help="another dataset version (id or prefix) to compare the label mix with")
    aud.set_defaults(func=c.cmd_audit)

    train = sub.add_parser("train", help="train a model, log it to MLflow, print the run id")
    train.add_argument("family", choices=list(lineage.FAMILY_NAMES))
    train.add_argument("--grid", choices=sorted(GRIDS),
                       help="train every variant of a grid under one parent run (reprogram paper: Chen & Lerch's "
                            "ablation; east paper: student, probe, KD, EAsT, KD + EAsT per teacher)")
    train.add_argument("--preset", choices=PRESET_NAMES,
                       help="training recipe: reference (the paper's; reprogram: Chen & Lerch's lr 1e-5, batch 4, "
                            "30 epochs on train + valid, last epoch kept) or tuned (small data); --set overrides "
                            "single values")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run of the same settings and data from its last epoch")
    train.set_defaults(func=c.cmd_train)

    for name, func, text in (("evaluate", c.cmd_evaluate, "test-split metrics and per-clip predictions of a run"),
                             ("register", c.cmd_register, "register a run's model as challenger, with lineage "
                                                        "tags and a model card")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", nargs="?", help="MLflow run id (default: the last `mirops train FAMILY`)")
        p.add_argument("--family", choices=list(lineage.FAMILY_NAMES), default="reprogram",
                       help="whose last training run to take when RUN is not given")
        p.set_defaults(func=func)

    prom = sub.add_parser("promote", help="the promotion gate: challenger vs champion on the same test clips "
                                          "(paired bootstrap, 1 - registry.alpha interval), audit passed, no "
                                          "critical drift")
    prom.add_argument("name", nargs="?", help="registered model (default: registry.model_name)")
    prom.add_argument("--version", help="the version to judge (default: the challenger)")
    prom.add_argument("--family", choices=list(lineage.FAMILY_NAMES),
                      help="the family's registered model, instead of NAME (what the dvc.yaml stages use)")
    prom.add_argument("--dry-run", action="store_true", help="explain the decision without acting on it")
    prom.set_defaults(func=c.cmd_promote)
    back = sub.add_parser("rollback", help="point champion back at the previous champion")
    back.add_argument("name", nargs="?", help="registered model (default: registry.model_name)")
    back.add_argument("--reason", help="why, recorded with the decision")
    back.add_argument("--dry-run", action="store_true", help="say what would be restored without acting")
    back.set_defaults(func=c.cmd_rollback)

    pred = sub.add_parser("predict", help="classify audio files or folders with a registered model; exit 1 "
                          "if any file could not be decoded")
    pred.add_argument("model_uri", metavar="MODEL_URI",
                      help="models:/NAME@ALIAS or models:/NAME/VERSION (models load only through the registry)")
    pred.add_argument("paths", metavar="PATH", nargs="+", help="audio files or folders (searched recursively)")
    pred.add_argument("--batch-size", type=int, default=16, help="clip-length windows per forward pass")
    pred.add_argument("--threshold", type=float, default=None,
                      help="positive class at p ≥ THRESHOLD (default: the model's training threshold)")
    pred.set_defaults(func=c.cmd_predict)

    mon = sub.add_parser("monitor", help="Evidently drift report of a batch of audio vs the training data")
    mon.add_argument("--current", help="folder of audio (or with a manifest.parquet); default production/")
    mon.add_argument("--reference", metavar="V|PATH",
                     help="dataset version (id or prefix; its train split) or folder of audio to compare with; "
                          "default: the champion's dataset version, else the current one")
    mon.add_argument("--fail-on-drift", action="store_true", help="exit 3 when drift is detected")
    mon.set_defaults(func=c.cmd_monitor)

    pipe = LeafParsers(sub.add_parser("pipeline", help="the whole retraining flow (Prefect)", group=True)
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
    run.set_defaults(func=c.cmd_pipeline_run)

    sub.add_parser("serve", help="serve the scheduled deployments (mirops-retrain/weekly, mirops-monitor/daily) of "
                   "params.yaml's schedule section on the Prefect server of PREFECT_API_URL (blocks)"
                   ).set_defaults(func=c.cmd_serve)
    ui = sub.add_parser("ui", help="the MLflow, Prefect and Evidently UIs of the project on localhost (blocks; "
                        "Ctrl-C stops all three); a port that is taken falls back to a free one")
    ui.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    ui.add_argument("--mlflow-port", type=int, default=5000, help="MLflow UI port (default 5000; 0: any free port)")
    ui.add_argument("--prefect-port", type=int, default=4200, help="Prefect UI port (default 4200; 0: any free port)")
    ui.add_argument("--evidently-port", type=int, default=8000,
                    help="Evidently UI port (default 8000; 0: any free port)")
    ui.set_defaults(func=c.cmd_ui)
    return parser
