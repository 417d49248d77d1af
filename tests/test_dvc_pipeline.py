"""One pipeline for Prefect and DVC: after `mirops pipeline run` DVC agrees with what ran, experiments and metrics
work with DVC's own commands, and no dataset version lives inside the project (a clean cannot lose one).

The project is a fresh clone as a user has it (the repository's dvc.yaml, .dvc/config, .gitignore, flows/ and
src/mirops, which the stages depend on) with the TINY parameters, in a real git repository; everything runs
through the real `mirops` and `dvc` commands.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mirops.data.version import default_remote, make_version
from tests.conftest import REPO, make_project, needs_soundfonts
from tests.test_cli import BIN, mirops, run
from tests.test_version import write_dataset

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(BIN / "dvc"), *args], root, check)


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


def clone_of_the_repository(root: Path) -> Path:
    """What `git clone` of mirops gives (from the working tree, so uncommitted edits count), as one commit."""
    make_project(root)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("src/mirops", "flows"):
        shutil.copytree(REPO / folder, root / folder, ignore=skip)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clone")
    return root


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clone after `mirops pipeline run` (reprogramming, 1 epoch on the TINY demo)."""
    root = clone_of_the_repository(tmp_path_factory.mktemp("dvc") / "clone")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in GIT_ENV.items():
            mp.setenv(key, value)
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # the tiny training lasts seconds
        mirops(root, "pipeline", "run")
    return root


def test_stage_code_deps_cover_every_module_the_stage_imports():
    """Each stage depends on the sources it runs: its pipeline module, all it imports (function-local imports
    too, transitively) and the packages around them, so a code change invalidates exactly those stages."""
    import grimp

    graph = grimp.build_graph("mirops", cache_dir=None)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in ("precompute", "audit", "monitor", "train", "evaluate", "register", "promote"):
        deps = [d for d in stages[stage].get("do", stages[stage])["deps"] if d.startswith("src/")]
        module = f"mirops.pipeline.{stage}"
        closure = {module, *graph.find_upstream_modules(module)}
        closure |= {name.rsplit(".", k)[0] for name in closure for k in range(1, name.count(".") + 1)}
        for name in sorted(closure - {"mirops"}):
            path = "src/" + name.replace(".", "/")
            covered = any(d in (path + ".py", path + "/__init__.py") or (path + "/").startswith(d + "/")
                          for d in deps)
            assert covered, f"dvc.yaml stage {stage}: runs {name}, which none of its deps covers"


@needs_soundfonts
@pytest.mark.slow
def test_after_the_pipeline_dvc_agrees_with_what_ran_and_git_has_it(ran):
    # dvc.lock records every stage of the run: nothing to reproduce.
    assert json.loads(dvc(ran, "status", "--json").stdout) == {}
    locked = yaml.safe_load((ran / "dvc.lock").read_text())["stages"]
    assert {"precompute", "audit", "monitor", "train@reprogram", "evaluate@reprogram", "register@reprogram",
            "promote@reprogram"} <= set(locked)
    # The dataset version, dvc.lock and the metrics are committed; the working tree has nothing left to commit.
    assert git(ran, "status", "--porcelain", "--", "data.dvc", "dvc.lock", "data.versions.jsonl", "metrics") == ""
    assert {"data.dvc", "dvc.lock", "metrics/reprogram/test.json"} <= set(git(ran, "ls-files").split())
    assert git(ran, "log", "-1", "--format=%s").startswith("pipeline: dataset ")
    # The tracked outputs hold numbers, not run ids or times.
    test = json.loads((ran / "metrics" / "reprogram" / "test.json").read_text())
    assert 0.0 <= test["test_mAP"] <= 1.0 and all(isinstance(v, int | float) for v in test.values() if v is not None)
    # The dataset version went to the remote outside the project, none is inside it.
    assert not (ran / "dvc-remote").exists() and any(default_remote(ran).rglob("*.dir"))


@needs_soundfonts
@pytest.mark.slow
def test_metrics_and_plots_work_with_dvc_commands(ran, tmp_path):
    shown = json.loads(dvc(ran, "metrics", "show", "--json").stdout)
    assert "test_mAP" in json.dumps(shown), shown
    assert dvc(ran, "metrics", "diff").returncode == 0  # HEAD has the metrics: nothing "failed to load"
    out = tmp_path / "plots"
    dvc(ran, "plots", "show", "-o", str(out))
    page = (out / "index.html").read_text()
    # The per-epoch curve and the per-class bars as Vega charts (their data inline) ...
    for plot, field in (("history_csv", '"valid_mAP"'), ("test_per_class_csv", '"class": "drums"')):
        assert f'id = "metrics_reprogram_{plot}"' in page and field in page, f"{plot} missing from dvc plots show"
    # ... and as images, which need no script from the network.
    for image in ("training_curves.png", "test_per_class.png"):
        copied = out / "static" / f"workspace_metrics_reprogram_{image}"
        assert copied.stat().st_size > 1000 and f"static/{copied.name}" in page, f"{image} missing from the page"


@needs_soundfonts
@pytest.mark.slow
def test_an_experiment_reruns_training_and_lists_its_test_metrics_beside_the_baseline(ran):
    baseline = json.loads((ran / "metrics" / "reprogram" / "test.json").read_text())["test_mAP"]
    # Up to evaluate@reprogram, to keep the test short (the full `dvc exp run` also registers and judges the model).
    dvc(ran, "exp", "run", "-S", "reprogram.epochs=2", "evaluate@reprogram")
    assert json.loads((ran / "metrics" / "reprogram" / "train.json").read_text())["epochs"] == 2
    rows = json.loads(dvc(ran, "exp", "show", "--json").stdout)
    found = {}
    for row in rows:
        for rev in [row, *[e for exp in row.get("experiments") or [] for e in exp.get("revs") or []]]:
            data = rev.get("data") or {}
            test = ((data.get("metrics") or {}).get("metrics/reprogram/test.json") or {}).get("data") or {}
            epochs = ((data.get("params") or {}).get("params.yaml") or {}).get("data", {}).get("reprogram", {})
            if "test_mAP" in test and rev.get("rev") != "workspace":
                found[epochs.get("epochs")] = test["test_mAP"]
    assert set(found) == {1, 2}, f"dvc exp show lists test_mAP for epochs {sorted(found)}: {rows}"
    assert found[1] == pytest.approx(baseline)
    assert dvc(ran, "metrics", "diff", "--json").returncode == 0


@needs_soundfonts
@pytest.mark.slow
def test_the_training_run_shows_its_datasets_commit_and_system_metrics_in_mlflow(ran):
    """What the MLflow UI shows without mirops: the Datasets tab, the source commit, the System metrics tab."""
    import mlflow

    from mirops.config import Settings
    from mirops.registry import tracking

    settings = Settings.load(ran)
    tracking.point_at_store(settings)
    tracking.setup(settings)
    run = mlflow.search_runs(filter_string="tags.`mirops.step` = 'train'", order_by=["attributes.start_time ASC"],
                             output_format="list")[0]  # the pipeline's (an experiment test trains later)
    version = run.data.tags["mirops.dataset_version"]
    inputs = {(d.dataset.name, d.dataset.digest, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
              for d in run.inputs.dataset_inputs}
    assert inputs == {(f"data/{split}", version, split) for split in ("train", "valid", "test")}
    schema = json.loads(next(d.dataset.schema for d in run.inputs.dataset_inputs if d.dataset.name == "data/train"))
    assert {"clip_id", "path", "group", *settings.demo.classes} <= {c["name"] for c in schema["mlflow_colspec"]}
    # The clone's commit (the pipeline's own commit of data.dvc comes after training).
    assert run.data.tags["mlflow.source.git.commit"] == git(ran, "rev-parse", "HEAD~1").strip()
    assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics), sorted(run.data.metrics)


@needs_soundfonts
@pytest.mark.slow
def test_make_clean_keeps_every_version_and_checkout_restores_one(ran):
    version = yaml.safe_load((ran / "data.dvc").read_text())["outs"][0]["md5"].removesuffix(".dir")
    manifest = (ran / "data" / "manifest.parquet").read_bytes()
    subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "clean"], cwd=ran, check=True, capture_output=True)
    assert not (ran / "data").exists() and (ran / ".dvc" / "cache").is_dir() and (ran / "data.dvc").exists()
    shutil.rmtree(ran / ".dvc" / "cache")  # worse than a clean: a fresh clone; only the remote has the data
    mirops(ran, "data", "checkout", version[:8])
    assert (ran / "data" / "manifest.parquet").read_bytes() == manifest


def test_the_remote_is_outside_the_project_and_a_setting_or_an_old_config_chooses_another(tmp_path):
    # Default: a per-project folder under $XDG_DATA_HOME, chosen on this machine (.dvc/config.local).
    first = tmp_path / "one" / "p"
    write_dataset(first)
    make_version(first)
    assert any(default_remote(first).rglob("*.dir"))
    assert default_remote(first) != default_remote(tmp_path / "two" / "p")  # same name, another project
    assert "dvc-remote" not in (first / ".dvc" / "config").read_text()
    # `dvc.remote` (here a path, relative to the project) wins.
    second = tmp_path / "two" / "p"
    write_dataset(second)
    make_version(second, remote="../shared-remote")
    assert any((tmp_path / "two" / "shared-remote").rglob("*.dir")) and not default_remote(second).exists()
    # A project made before keeps the remote its .dvc/config names.
    old = tmp_path / "old"
    write_dataset(old)
    dvc(old, "init", "--no-scm", "-q")  # as `dvc init` and mirops made it then: no .dvc/config.local
    (old / ".dvc" / "config").write_text("[core]\n    no_scm = True\n    remote = local\n"
                                         "['remote \"local\"']\n    url = ../dvc-remote\n")
    make_version(old)
    assert any((old / "dvc-remote").rglob("*.dir")) and not default_remote(old).exists()


def test_the_record_leaves_out_stages_run_with_other_settings_and_commits_only_its_files(tmp_path):
    """record_pipeline on a stand-in dvc.yaml (two stages that write a file): a stage whose parameters came from
    an override is not recorded, the other is, and git gets dvc.lock, data.dvc and the tracked output only."""
    from mirops.config import Settings
    from mirops.pipeline.version import record_pipeline

    root = make_project(tmp_path / "p")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "audit": {"cmd": "echo", "deps": ["data"], "params": ["audit"], "outs": [{"out/audit.txt": {"cache": False}}]},
        "precompute": {"cmd": "echo", "deps": ["data"], "params": ["ingest.crop"],
                       "metrics": [{"metrics/pre.json": {"cache": False}}]}}}))
    git(root, "init", "-q")
    (root / ".gitignore").write_text("/out/\n")
    (root / "staged-by-the-user.txt").write_text("not part of the run")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "project")
    (root / "staged-by-the-user.txt").write_text("changed, and staged")
    git(root, "add", "staged-by-the-user.txt")
    write_dataset(root)
    make_version(root)
    for path, text in (("out/audit.txt", "audit"), ("metrics/pre.json", '{"clips": 3}')):
        (root / path).parent.mkdir(exist_ok=True)
        (root / path).write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in GIT_ENV.items():
            mp.setenv(key, value)
        record = record_pipeline(Settings.load(root), [], overrides={"audit__max_imbalance_ratio": 99})
    assert record.committed == ["precompute"] and "audit.max_imbalance_ratio" in record.skipped["audit"]
    status = json.loads(dvc(root, "status", "--json").stdout)
    assert set(status) == {"audit"}  # the overridden stage is what DVC still calls changed
    committed = git(root, "show", "--name-only", "--format=", record.git_commit).split()
    assert set(committed) == {"data.dvc", "data.versions.jsonl", ".gitignore", "dvc.lock", "metrics/pre.json"}
    assert "staged-by-the-user.txt" in git(root, "diff", "--cached", "--name-only")  # still staged, not committed


def test_every_parameter_a_stage_names_is_in_the_repositorys_params_yaml():
    """DVC refuses to record (`dvc commit`) a stage whose `params:` key params.yaml lacks, even when the setting
    has a default: a fresh clone's `make demo` would leave that stage "changed" for ever."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = []
    for name, stage in stages.items():
        for key in stage.get("do", stage).get("params", []):
            for family in params["dvc"]["families"] if "${item}" in str(key) else [None]:
                node, absent = params, object()
                for part in str(key).replace("${item}", family or "").split("."):
                    node = node.get(part, absent) if isinstance(node, dict) else absent
                if node is absent:  # a key set to null is present: DVC records it
                    missing.append(f"{name}: {key}")
    assert not missing, missing
