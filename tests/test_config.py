from mirops.config import Settings
from tests.conftest import make_project


def test_params_yaml_is_read_and_env_overrides_it(tmp_path, monkeypatch):
    root = tmp_path
    (root / "params.yaml").write_text("seed: 3\ntrain:\n  epochs: 4\n  lr: 0.01\n")
    settings = Settings.load(root)
    assert (settings.seed, settings.train.epochs, settings.train.lr) == (3, 4, 0.01)
    assert settings.train.batch_size == 8  # defaults fill what the file leaves out

    monkeypatch.setenv("MIROPS_TRAIN__EPOCHS", "2")
    assert Settings.load(root).train.epochs == 2


def test_overrides_and_paths_resolve_under_the_root(tmp_path):
    root = make_project(tmp_path, {})
    settings = Settings.load(root, train__epochs=9)
    assert settings.train.epochs == 9
    assert settings.data_dir == root.resolve() / "data"
    assert settings.tracking_uri == f"sqlite:///{root.resolve() / 'mlruns.db'}"


def test_repository_params_yaml_is_valid():
    from tests.conftest import REPO

    settings = Settings.load(REPO)
    assert settings.train.backbone == "yamnet" and settings.demo.clips > 0
