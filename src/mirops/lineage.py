"""The lineage vocabulary, in one place: MLflow tag names, step names, artifact paths, deployment names.

Every run, registered version and flow that mirops writes is found again by these names (the gate reads
what the monitor wrote, `mirops predict` what training wrote), so they are defined once and imported.
"""

from __future__ import annotations

# ---------------------------------------------------------------- tags on every run
TAG_DATASET_VERSION = "mirops.dataset_version"  # the DVC md5 of data/ the run read
TAG_GIT_COMMIT = "mirops.git_commit"            # the code's commit ("-dirty" with local edits)
TAG_STEP = "mirops.step"                        # one of the STEP_* names below

# ---------------------------------------------------------------- step names (the MLflow runs' kinds)
STEP_AUDIT = "audit"
STEP_TRAIN = "train"
STEP_TRAIN_GRID = "train-grid"
STEP_MONITOR = "monitor"
STEP_PROMOTE = "promote"

# ---------------------------------------------------------------- training runs
TAG_FAMILY = "mirops.family"              # the model family (reprogram, east)
TAG_DEVICE = "mirops.device"
TAG_CHECKPOINTS = "mirops.checkpoints"    # the checkpoint folder `--resume` continues from
TAG_GRID = "mirops.grid"
TAG_VARIANT = "mirops.variant"
TAG_PARENT_RUN = "mirops.parent_run_id"
TAG_TEACHER = "mirops.teacher"
TAG_MODEL_URI = "mirops.model_uri"        # the logged model of a training run
TAG_FLOW_RUN = "mirops.flow_run_id"       # the Prefect flow run that made the run
TAG_TRIGGER_PREFIX = "mirops.trigger_"    # + reason / monitor_run_id / flow_run_id of a triggered retraining

# ---------------------------------------------------------------- audit
TAG_AUDIT_SUCCESS = "mirops.audit_success"  # "true" | "false" | "not-run"
TAG_AUDIT_RUN = "mirops.audit_run_id"
TAG_AUDIT_SUMMARY = "mirops.audit_summary"
TAG_AUDIT_REFERENCE = "mirops.audit_reference"
TAG_DATA_DOCS = "mirops.data_docs"            # file URI of the audit's Great Expectations Data Docs index

# ---------------------------------------------------------------- monitor
TAG_DRIFT_DETECTED = "mirops.drift_detected"
TAG_DRIFT_SEVERITY = "mirops.drift_severity"  # none | drift | critical (the gate reads it)
TAG_DRIFT_RUN = "mirops.drift_run_id"
TAG_EVIDENTLY_SNAPSHOT = "mirops.evidently_snapshot"
TAG_CHAMPION_VERSION = "mirops.champion_version"
TAG_MODEL_NAME = "mirops.model_name"
TAG_MODEL_VERSION = "mirops.model_version"
TAG_PREDICTIONS = "mirops.predictions"       # compared | unavailable | no champion
TAG_REFERENCE = "mirops.reference"
TAG_REFERENCE_KIND = "mirops.reference_kind"
TAG_REFERENCE_CHOSEN_BY = "mirops.reference_chosen_by"
TAG_CURRENT = "mirops.current"
TAG_TRIGGERED = "mirops.triggered_flow_run"      # the retraining a drift verdict started
TAG_NOT_TRIGGERED = "mirops.retrain_not_started"  # ... or why it could not start one

# ---------------------------------------------------------------- registered versions and decisions
TAG_TRAINING_RUN = "mirops.training_run_id"
TAG_DECISION = "mirops.decision"
TAG_DECISION_RUN = "mirops.decision_run_id"
TAG_ACTION = "mirops.action"
TAG_VERSION = "mirops.version"
TAG_CHAMPION_BEFORE = "mirops.champion_before"
TAG_CHAMPION_AFTER = "mirops.champion_after"
TAG_ROLLED_BACK_BY = "mirops.rolled_back_by"
TAG_CHAMPION_STACK = "mirops.champion_stack"
TAG_SKIPPED = "mirops.skipped"  # + "." + variant: why a grid parent run did not train that variant

# ---------------------------------------------------------------- artifact paths (on MLflow runs)
MODEL_ARTIFACT = "model"
PREDICTIONS_FILE = "test_predictions.parquet"
PER_CLASS_FILE = "test_per_class.json"
MODEL_CARD_FILE = "model_card.md"
HISTORY_FILE = "history.json"
VERDICT_FILE = "drift/verdict.json"
CHAMPION_PREDICTIONS_FILE = "champion_predictions.json"
DECISION_FILE = "decision.json"

# ---------------------------------------------------------------- files beside the project (artifacts/)
# artifacts/<STAGE>/...: what a later step, a DVC stage or a person reads.
ARTIFACT_TRAIN = "train"
ARTIFACT_EVALUATE = "evaluate"
ARTIFACT_REGISTER = "register"
ARTIFACT_PROMOTE = "promote"
ARTIFACT_MONITOR = "monitor"
ARTIFACT_AUDIT = "audit"
ARTIFACT_PRECOMPUTE = "precompute"
ARTIFACT_DATA_DOCS = "data_docs"  # GE Data Docs of the latest audit: artifacts/data_docs/index.html

# ---------------------------------------------------------------- files git tracks for DVC (dvc.yaml metrics, plots)
# metrics/<family>/...: small and deterministic (no run ids, no times), committed with dvc.lock so that
# `dvc metrics diff`, `dvc exp show` and `dvc plots show` find them in every revision.
METRICS_DIR = "metrics"
TRAIN_METRICS_FILE = "train.json"             # best epoch, its valid metrics, parameter counts
HISTORY_CSV = "history.csv"                   # one row per epoch: losses, valid mAP and ROC-AUC
TRAINING_CURVES_PNG = "training_curves.png"
TEST_METRICS_FILE = "test.json"               # test-split metrics (what `dvc exp show` lists)
TEST_PER_CLASS_CSV = "test_per_class.csv"     # one row per class: AP, ROC-AUC, F1, counts
TEST_PER_CLASS_PNG = "test_per_class.png"

# ---------------------------------------------------------------- Prefect: flows and deployments
RETRAIN_FLOW = "mirops-retrain"
MONITOR_FLOW = "mirops-monitor"
PRECOMPUTE_FLOW = "mirops-precompute"
RETRAIN_DEPLOYMENT = f"{RETRAIN_FLOW}/weekly"
MONITOR_DEPLOYMENT = f"{MONITOR_FLOW}/daily"
# Flow files, loaded by entrypoint path relative to the flows folder (never imported as a package).
RETRAIN_ENTRYPOINT = "retrain.py:retrain"
MONITOR_ENTRYPOINT = "monitor.py:monitor"
PRECOMPUTE_ENTRYPOINT = "precompute.py:run_precompute"

# ---------------------------------------------------------------- model families (their objects: mirops.families)
FAMILY_NAMES = ("reprogram", "east")  # the CLI's choices and the values of TAG_FAMILY
